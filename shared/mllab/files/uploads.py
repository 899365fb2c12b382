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
from mllab.files import catalog, objects, recorder, schemas, storage
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


def _object_for(body: schemas.SignUpload, uid: str) -> objects.ObjectName:
    ids = _ids(body)
    if body.kind in ("model", "weights"):
        return _version_file(uid, body.kind, **ids)
    if body.kind == "dataset":
        return _dataset_file(uid, **ids)
    return _metrics_file(uid, **ids)


def _version_file(uid: str, kind: str, model_id: str, version: int) -> objects.ObjectName:
    model = catalog.owned(catalog.MODELS, model_id, uid)
    snap = catalog.version_ref(model_id, version).get()
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
    return objects.model_file(uid, model["project_id"], model_id, version, kind)


def _dataset_file(uid: str, dataset_id: str, filename: str) -> objects.ObjectName:
    dataset = catalog.owned(catalog.DATASETS, dataset_id, uid)
    if dataset.get("generation"):
        raise Problem(
            409, "This dataset already has its file; create a new dataset to upload another.", slug="file-recorded"
        )
    return objects.dataset_file(uid, dataset["project_id"], dataset_id, filename)


def _metrics_file(uid: str, job_id: str) -> objects.ObjectName:
    job = catalog.owned(catalog.JOBS, job_id, uid)
    if job.get("metrics_generation"):
        raise Problem(
            409, "This training run already has its metrics; create a new run to upload others.", slug="file-recorded"
        )
    return objects.metrics_file(uid, job["project_id"], job_id)


def uploads_today(uid: str) -> int:
    """Files recorded today (UTC)."""
    day = recorder.day_ref(uid).get()
    return int((day.to_dict() or {}).get("uploads", 0)) if day.exists else 0


def _check_plan(uid: str) -> config.Plan:
    plan = entitlements.plan_of(entitlements.get(uid), clock.now())
    if not plan.cloud_saves:
        raise Problem(
            403,
            "Saving to the cloud needs PRO or a promo trial. You can keep training and export "
            "models in the browser; subscribe or apply a promo code under Billing to save here.",
            slug="plan-required",
        )
    return plan


def _check_room(uid: str, size: int, plan: config.Plan) -> None:
    used = recorder.usage_of(uid)
    limit = plan.storage_bytes
    if used + size > limit:
        raise Problem(
            403,
            f"This file needs {_mib(size)} but only {_mib(max(0, limit - used))} of your "
            f"{_mib(limit)} are free. Delete something first.",
            slug="quota-exceeded",
        )
    if uploads_today(uid) >= plan.uploads_per_day:
        now = clock.now()
        tomorrow = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        raise Problem(
            429,
            f"You reached today's {plan.uploads_per_day} uploads. More tomorrow (UTC).",
            slug="daily-upload-limit",
            headers={"Retry-After": str(int((tomorrow - now).total_seconds()))},
        )


def sign_upload(uid: str, body: schemas.SignUpload) -> schemas.SignedUrl:
    """A URL to PUT one file to, once every check passed."""
    plan = _check_plan(uid)
    kind = objects.KINDS[body.kind]
    if body.size > kind.max_bytes:
        raise Problem(
            413,
            f"{body.kind} files can be at most {_mib(kind.max_bytes)}; this one is {_mib(body.size)}.",
            errors=[{"field": "size", "message": f"at most {kind.max_bytes} bytes"}],
        )
    try:
        name = _object_for(body, uid)
    except ValueError as exc:
        raise Problem(422, str(exc), errors=[{"field": "filename", "message": str(exc)}]) from None
    _check_room(uid, body.size, plan)
    signed = storage.signed_upload_url(str(name), kind.content_type, body.size)
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
    signed = storage.signed_download_url(name)
    return schemas.SignedUrl(
        url=signed.url, method="GET", headers=signed.headers, object=name, expires_at=clock.rfc3339(signed.expires_at)
    )
