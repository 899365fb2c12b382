"""What may be uploaded or downloaded, decided before any URL is signed: the caller owns every id
(another user's id is a 404), the plan allows cloud saves, the file fits its cap, the target has no
file recorded yet, the quota and the daily upload count have room. Both counts are of recorded files
(mllab.files.recorder counts them, and refuses again what passes here), never of URLs issued. The server
builds the object name; the client names only ids, a version and, for datasets, a file name. Every
refusal's `detail` can be shown to the user as is."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from mllab.billing import entitlements
from mllab.files import catalog, objects, recorder, schemas, store
from mllab.platform import clients, clock, config
from mllab.platform.problems import Problem
from mllab.platform.queries import Query

QUERIES: tuple[Query, ...] = (Query(recorder.ARTIFACTS, ("uid", "object")),)  # for infra's index file

_NEEDS = {
    "model": ("model_id", "version"),
    "weights": ("model_id", "version"),
    "dataset": ("dataset_id", "filename"),
    "metrics": ("job_id",),
}


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB"


def _ids(body: schemas.SignUpload) -> dict[str, Any]:
    """The ids this kind of upload takes, all given (else 422, as for one it does not take)."""
    missing = [f for f in _NEEDS[body.kind] if getattr(body, f) is None]
    extra = [
        f
        for f in ("model_id", "version", "dataset_id", "filename", "job_id")
        if f not in _NEEDS[body.kind] and getattr(body, f) is not None
    ]
    if missing or extra:
        raise Problem(
            422,
            f"A {body.kind} upload takes {' and '.join(_NEEDS[body.kind])}.",
            errors=[{"field": f, "message": "required"} for f in missing]
            + [{"field": f, "message": f"not used for {body.kind}"} for f in extra],
        )
    return {f: getattr(body, f) for f in _NEEDS[body.kind]}


def _targets(kind: str, ids: dict[str, Any]) -> list[Any]:
    """The records an upload of `kind` goes to, to read: the model and its version, the dataset, or the
    training run (a 404 problem for a malformed id)."""
    if kind in ("model", "weights"):
        model = catalog.owned_ref(catalog.MODELS, ids["model_id"])
        return [model, catalog.version_ref(ids["model_id"], ids["version"])]
    if kind == "dataset":
        return [catalog.owned_ref(catalog.DATASETS, ids["dataset_id"])]
    return [catalog.owned_ref(catalog.JOBS, ids["job_id"])]


def _object_for(kind: str, ids: dict[str, Any], uid: str, targets: list[Any]) -> objects.ObjectName:
    """The object to sign for, from the snapshots of `_targets`, once the caller owns them and they
    have room for this file (404 or 409 otherwise)."""
    if kind in ("model", "weights"):
        return _version_file(uid, kind, ids["version"], *targets)
    if kind == "dataset":
        return _dataset_file(uid, ids["filename"], *targets)
    return _metrics_file(uid, *targets)


def _version_file(uid: str, kind: str, version: int, model_snap: Any, snap: Any) -> objects.ObjectName:
    model = catalog.owned_in(catalog.MODELS, model_snap, uid)
    if not snap.exists or snap.get("uid") != uid:
        raise Problem(404, f"Version {version} of this model does not exist. Allocate it first.")
    fname = "model.json" if kind == "model" else "weights.bin"
    doc = snap.to_dict()
    if doc.get("status") == "ready" or fname in (doc.get("files") or {}) or fname in (doc.get("recorded") or []):
        raise Problem(
            409,
            f"Version {version} already has its {fname}; allocate a new version to save again.",
            slug="version-ready",
        )
    return objects.model_file(uid, model["project_id"], model["id"], version, kind)


def _dataset_file(uid: str, filename: str, snap: Any) -> objects.ObjectName:
    dataset = catalog.owned_in(catalog.DATASETS, snap, uid)
    if dataset.get("generation"):
        raise Problem(
            409, "This dataset already has its file; create a new dataset to upload another.", slug="file-recorded"
        )
    return objects.dataset_file(uid, dataset["project_id"], dataset["id"], filename)


def _metrics_file(uid: str, snap: Any) -> objects.ObjectName:
    job = catalog.owned_in(catalog.JOBS, snap, uid)
    if job.get("metrics_generation"):
        raise Problem(
            409, "This training run already has its metrics; create a new run to upload others.", slug="file-recorded"
        )
    return objects.metrics_file(uid, job["project_id"], job["id"])


def _check_plan(entitlement: Any) -> config.Plan:
    plan = entitlements.plan_of(entitlements.doc_in(entitlement), clock.now())
    if not plan.cloud_saves:
        raise Problem(
            403,
            "Saving to the cloud needs PRO or a promo trial. You can keep training and export "
            "models in the browser; subscribe or apply a promo code under Billing to save here.",
            slug="plan-required",
        )
    return plan


def _check_room(size: int, plan: config.Plan, usage: Any, day: Any) -> None:
    used = recorder.stored_bytes(usage)
    limit = plan.storage_bytes
    if used + size > limit:
        raise Problem(
            403,
            f"This file needs {_mib(size)} but only {_mib(max(0, limit - used))} of your "
            f"{_mib(limit)} are free. Delete something first.",
            slug="quota-exceeded",
        )
    if recorder.uploads_counted(day) >= plan.uploads_per_day:
        now = clock.now()
        tomorrow = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        raise Problem(
            429,
            f"You reached today's {plan.uploads_per_day} uploads. More tomorrow (UTC).",
            slug="daily-upload-limit",
            headers={"Retry-After": str(int((tomorrow - now).total_seconds()))},
        )


def sign_upload(uid: str, body: schemas.SignUpload) -> schemas.SignedUrl:
    """A URL to PUT one file to, once every check passed. Every document the checks need is read in one
    round trip (six sequential reads before, with the liveness check's); the checks then run in the
    order a user should hear of them: the plan, the file's size, its target, the room left."""
    refused: Problem | None = None
    try:
        ids = _ids(body)
        targets = _targets(body.kind, ids)
    except Problem as problem:  # a malformed target: still after the plan and the size
        ids, targets, refused = {}, [], problem
    account = [entitlements.ref(uid), recorder.usage_ref(uid), recorder.day_ref(uid)]
    got = clients.read_all([*account, *targets])
    entitlement, usage, day = (got[ref.path] for ref in account)
    plan = _check_plan(entitlement)
    kind = objects.KINDS[body.kind]
    if body.size > kind.max_bytes:
        raise Problem(
            413,
            f"{body.kind} files can be at most {_mib(kind.max_bytes)}; this one is {_mib(body.size)}.",
            errors=[{"field": "size", "message": f"at most {kind.max_bytes} bytes"}],
        )
    if refused:
        raise refused
    try:
        name = _object_for(body.kind, ids, uid, [got[ref.path] for ref in targets])
    except ValueError as exc:
        raise Problem(422, str(exc), errors=[{"field": "filename", "message": str(exc)}]) from None
    _check_room(body.size, plan, usage, day)
    signed = store.signed_upload_url(str(name), kind.content_type, body.size)
    return schemas.SignedUrl(
        url=signed.url,
        method="PUT",
        headers=signed.headers,
        object=signed.object,
        expires_at=clock.rfc3339(signed.expires_at),
    )


def sign_download(uid: str, name: str) -> schemas.SignedUrl:
    """A URL to GET one of the user's recorded files by its object name."""
    from google.cloud.firestore_v1.base_query import FieldFilter

    parsed = objects.parse(name)
    not_found = Problem(404, "There is no saved file of yours by that name.")
    if parsed is None or parsed.uid != uid:
        raise not_found
    query = (
        clients.firestore()
        .collection(recorder.ARTIFACTS)
        .where(filter=FieldFilter("uid", "==", uid))
        .where(filter=FieldFilter("object", "==", name))
    )
    live = [s for s in query.stream(**clients.opts()) if not s.get("deleted_at")]  # see clients: streams keep a retry
    if not live:
        raise not_found
    signed = store.signed_download_url(name)
    return schemas.SignedUrl(
        url=signed.url, method="GET", headers=signed.headers, object=name, expires_at=clock.rfc3339(signed.expires_at)
    )
