"""Deployments (PRO): one ready version of one of your models, answering predictions.

`deployments/<id>` = {uid, model_id, project_id, version, public, description, created_at,
updated_at}. Another user's id answers 404 like an unknown one. A version must be ready and its
files servable (read and checked when the deployment is made or switched, so a bad file is a 409
now, not a failure at the first prediction). Switching versions is one field: the next prediction
loads the new version while the old one keeps answering until then (no downtime).

Making one also stamps the owner's user document with `deployed_at` (DEPLOYED_AT), before the
deployment exists and never removed: only a user who has it can have predictions counted, so `GET /me`
reads this month's prediction shards (mllab.serving.metering) for them alone. The user document is
read by every access token's liveness check anyway; most users never deploy, and the 16 shard reads
were most of /me's Firestore work."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from mllab.billing import entitlements
from mllab.files import catalog
from mllab.identity import users
from mllab.platform import clients, clock, config
from mllab.platform.problems import Problem
from mllab.platform.queries import Query

from .errors import ModelError

COLLECTION = "deployments"
QUERIES: tuple[Query, ...] = (Query(COLLECTION, ("uid",)),)  # a user's deployments (sorted here)
MAX_DEPLOYMENTS = config.PLANS["pro"].deployments  # per user (the plans table's)
MAX_DESCRIPTION = 500
DEPLOYED_AT = "deployed_at"  # on users/<uid>: when they last made a deployment (see above)
PLAN_REQUIRED = (
    "Deployments need PRO or a promo trial: a deployed model answers predictions over HTTPS. "
    "Subscribe or apply a promo code under Billing."
)


def _db() -> Any:
    return clients.firestore()


def ref(deployment_id: str) -> Any:
    return _db().collection(COLLECTION).document(deployment_id)


def predict_url(deployment_id: str) -> str:
    return f"{config.settings().public_url.rstrip('/')}/predict/{deployment_id}"


def out(doc: dict[str, Any], deployment_id: str) -> dict[str, Any]:
    def iso(v: Any) -> str | None:
        return clock.rfc3339(v) if isinstance(v, datetime) else None

    return {
        "id": deployment_id,
        "model_id": doc["model_id"],
        "version": doc["version"],
        "public": bool(doc.get("public")),
        "description": doc.get("description") or "",
        "predict_url": predict_url(deployment_id),
        "created_at": iso(doc.get("created_at")),
        "updated_at": iso(doc.get("updated_at")),
    }


def _require_pro(uid: str) -> None:
    if not entitlements.is_pro(uid):
        raise Problem(403, PLAN_REQUIRED, slug="plan-required")


def _servable_version(uid: str, model_id: str, version: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model, version) of the caller's, ready and servable; 404 / 409 otherwise."""
    if type(version) is not int or version < 1:
        raise Problem(
            422, "version is a version number (1, 2, ...).", errors=[{"field": "version", "message": "invalid"}]
        )
    from . import store  # the inference engine, only where a model is read (account deletion imports this module)

    model = catalog.owned(catalog.MODELS, model_id, uid)
    doc = catalog.owned_version(model, version, uid)
    if doc.get("status") != "ready":
        raise Problem(409, f"Version {version} is {doc.get('status') or 'not ready'}; deploy a ready version.")
    try:
        store.load({**doc, "version": version})
    except ModelError as exc:
        raise Problem(409, f"Version {version} cannot be served: {exc}.", slug="model-not-servable") from None
    return model, doc


def owned(uid: str, deployment_id: Any) -> dict[str, Any]:
    """The caller's deployment (with its `id`), or 404 (unknown, malformed, or another user's)."""
    if not isinstance(deployment_id, str) or not deployment_id.isalnum() or len(deployment_id) > 64:
        raise _not_found()
    snap = ref(deployment_id).get(timeout=clients.deadline())
    doc = snap.to_dict() if snap.exists else None
    if not doc or doc.get("uid") != uid:
        raise _not_found()
    return {**doc, "id": deployment_id}


def _not_found() -> Problem:
    return Problem(404, "No deployment of yours has this id; it may have been deleted.")


def _mine(uid: str) -> list[Any]:
    from google.cloud.firestore_v1.base_query import FieldFilter

    return list(
        _db().collection(COLLECTION).where(filter=FieldFilter("uid", "==", uid)).stream(timeout=clients.deadline())
    )


def create(uid: str, model_id: str, version: Any) -> dict[str, Any]:
    _require_pro(uid)
    model, _ = _servable_version(uid, model_id, version)
    if len(_mine(uid)) >= MAX_DEPLOYMENTS:
        raise Problem(409, f"You have {MAX_DEPLOYMENTS} deployments, the most one account may hold: delete one first.")
    deployment_id = uuid.uuid4().hex
    now = clock.now()
    # The mark first: should the deployment's write fail after it, /me merely reads shards with no counts.
    users.update(uid, **{DEPLOYED_AT: now})
    doc = {
        "uid": uid,
        "model_id": model["id"],
        "project_id": model.get("project_id"),
        "version": version,
        "public": False,
        "description": "",
        "created_at": now,
        "updated_at": now,
    }
    ref(deployment_id).create(doc, timeout=clients.deadline())
    return out(doc, deployment_id)


def ever_deployed(user: dict[str, Any]) -> bool:
    """Whether `user` (their users/<uid> document) has made a deployment, and so may have predictions."""
    return DEPLOYED_AT in user


def list_deployments(uid: str) -> list[dict[str, Any]]:
    docs = [(s.id, s.to_dict()) for s in _mine(uid)]
    docs.sort(key=lambda p: p[1].get("created_at") or clock.now(), reverse=True)
    return [out(d, i) for i, d in docs]


def export_deployments(uid: str) -> list[dict[str, Any]]:
    """The user's deployments, oldest first, for the account export (with the project of the model)."""
    docs = sorted(((s.id, s.to_dict()) for s in _mine(uid)), key=lambda p: p[1].get("created_at") or clock.now())
    return [{**out(d, i), "project_id": d.get("project_id")} for i, d in docs]


def get(uid: str, deployment_id: str) -> dict[str, Any]:
    doc = owned(uid, deployment_id)
    return out(doc, deployment_id)


def update(uid: str, deployment_id: str, changes: dict[str, Any]) -> dict[str, Any]:
    """PATCH: `version` (switched once the new one is checked servable), `public`, `description`."""
    doc = owned(uid, deployment_id)
    patch: dict[str, Any] = {}
    if "version" in changes:
        _require_pro(uid)
        _servable_version(uid, doc["model_id"], changes["version"])
        patch["version"] = changes["version"]
    if "public" in changes:
        if type(changes["public"]) is not bool:
            raise Problem(422, "public is true or false.", errors=[{"field": "public", "message": "not a boolean"}])
        patch["public"] = changes["public"]
    if "description" in changes:
        text = changes["description"]
        if not isinstance(text, str) or len(text) > MAX_DESCRIPTION:
            message = f"at most {MAX_DESCRIPTION} characters"
            raise Problem(422, f"description: {message}.", errors=[{"field": "description", "message": message}])
        patch["description"] = text.strip()
    if patch:
        patch["updated_at"] = clock.now()
        ref(deployment_id).update(patch, timeout=clients.deadline())
    return out({**doc, **patch}, deployment_id)


def delete(uid: str, deployment_id: str) -> None:
    owned(uid, deployment_id)
    ref(deployment_id).delete(timeout=clients.deadline())


def delete_user(uid: str) -> int:
    """Deletes every deployment of a user (account deletion); returns how many."""
    return clients.delete_refs([s.reference for s in _mine(uid)])


# --- share pages ---------------------------------------------------------------------------------

NOT_SHARED = "No shared model has this id: its owner may have stopped sharing it."


def public_view(deployment_id: Any) -> dict[str, Any]:
    """What a share page needs, for anyone (no sign-in): the model's name and description, its inputs
    and outputs, and short-lived signed URLs of its two files, so the visitor's browser predicts with
    TF.js (no server inference). 404 alike for an unknown id, a private deployment, and an owner
    without PRO (a paused deployment is not shared either)."""
    from mllab.files import store as file_store

    from . import store

    if not isinstance(deployment_id, str) or not deployment_id.isalnum() or len(deployment_id) > 64:
        raise Problem(404, NOT_SHARED)
    snap = ref(deployment_id).get(timeout=clients.deadline())
    doc = snap.to_dict() if snap.exists else None
    if not doc or not doc.get("public"):
        raise Problem(404, NOT_SHARED)
    n = doc["version"]
    # the owner's plan, the model and the version in one round trip
    refs = [
        entitlements.ref(doc["uid"]),
        catalog.ref(catalog.MODELS, doc["model_id"]),
        catalog.version_ref(doc["model_id"], n),
    ]
    found = {
        s.reference.path: s.to_dict() if s.exists else None for s in _db().get_all(refs, timeout=clients.deadline())
    }
    entitlement, model_doc, version = (found.get(r.path) for r in refs)
    if entitlements.plan_of(entitlement, clock.now()).id != "pro":
        raise Problem(404, NOT_SHARED)
    if not model_doc or model_doc.get("deleting") or not version or version.get("status") != "ready":
        raise Problem(404, NOT_SHARED)
    served = store.get(doc["model_id"], n, lambda: {**version, "version": n})
    pre = served.preprocessor.spec
    files = version["files"]
    model_url = file_store.signed_download_url(files["model.json"]["object"])
    weights_url = file_store.signed_download_url(files["weights.bin"]["object"])
    labels = pre.target_encoding.labels if pre.task != "regression" else None
    return {
        "id": deployment_id,
        "name": model_doc.get("name", ""),
        "description": doc.get("description") or "",
        "version": n,
        "task": pre.task,
        "target": pre.target,
        "labels": labels,
        "features": served.preprocessor.feature_list(),
        "model_json_url": model_url.url,
        "weights_url": weights_url.url,
        "urls_expire_at": clock.rfc3339(min(model_url.expires_at, weights_url.expires_at)),
    }
