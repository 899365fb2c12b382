"""The catalog: projects, models (with versions), datasets and training jobs (docs/architecture.md).

Every record is scoped by `uid`; every query filters by it, and another user's id answers 404 exactly
as an unknown one does. Ids are uuid4 hex, so they fit the object-name grammar in `mllab.files.objects`.

Records hold `config_json` / `schema_json` as JSON text: Firestore cannot store an array directly
inside an array (a functional model's `inbound_nodes` is one), and the text round-trips any JSON
object. The API answers them as objects.

Deleting is ordered so that a failure part-way can simply be retried, and so that nothing is left
behind by a create racing the delete:
1. the record is marked `deleting` (from then on `owned()` answers 404, so no new child, version or
   signed URL is made for it; a retried DELETE still finds it);
2. every object under its prefix is deleted (the recorder frees the quota on OBJECT_DELETE);
3. child records are deleted, then the record itself.
A create checks its parent before writing and again after: if the parent was marked meanwhile, the
create removes what it wrote and answers 404 (the mark precedes the delete's child query, so a child
written after that query always sees it).

Queries are declared in `QUERIES` (a test checks infra's index file covers them). They stay within
uid equality + at most one more equality + order by created_at (then document id), newest first.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import re
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from mllab.billing import entitlements
from mllab.files import objects
from mllab.platform import audit, clients, clock, config, jsonvalues, log
from mllab.platform.problems import Problem
from mllab.platform.queries import Query

if TYPE_CHECKING:  # the request models only annotate here: the predict and event paths never load them
    from mllab.files import schemas

PROJECTS = "projects"
MODELS = "models"
DATASETS = "datasets"
JOBS = "jobs"
VERSIONS = "versions"  # subcollection of models/{mid}: documents keyed by version_id(n)
COLLECTIONS = (PROJECTS, MODELS, DATASETS, JOBS)

# How many records of each collection a user keeps: `catalog_counts/<uid>` holds one counter per
# collection, moved by atomic increments (a create reserves a place first and gives it back when it
# is refused; a delete gives back in the same batch that deletes), so a burst of parallel creates
# can never pass the plan's limit (mllab.platform.config.Plan).
COUNTS = "catalog_counts"

DEFAULT_LIMIT = 50
MAX_LIMIT = 100
FRAMEWORK = "tfjs"
_BATCH = 400  # Firestore allows 500 writes per batch
_ID = re.compile(r"[0-9a-f]{32}")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SINGULAR = {PROJECTS: "project", MODELS: "model", DATASETS: "dataset", JOBS: "training job"}
# Query parameters each list accepts besides limit and cursor.
LIST_FILTERS: dict[str, tuple[str, ...]] = {
    PROJECTS: (),
    MODELS: ("project_id",),
    DATASETS: ("project_id",),
    JOBS: ("project_id", "model_id"),
}
# Switches a list takes: GET /models?versions=true answers each model with its versions, as GET
# /models/{id} does (the lab's library shows them; one batched read instead of a request per model).
LIST_OPTIONS: dict[str, tuple[str, ...]] = {PROJECTS: (), MODELS: ("versions",), DATASETS: (), JOBS: ()}
_INTERNAL = ("uid", "deleting")  # never answered


_NEWEST_FIRST = (("created_at", "DESCENDING"), ("__name__", "DESCENDING"))

QUERIES: tuple[Query, ...] = (
    # lists (GET /<collection>), newest first, with their filters
    Query(PROJECTS, ("uid",), _NEWEST_FIRST),
    Query(MODELS, ("uid",), _NEWEST_FIRST),
    Query(MODELS, ("uid", "project_id"), _NEWEST_FIRST),
    Query(DATASETS, ("uid",), _NEWEST_FIRST),
    Query(DATASETS, ("uid", "project_id"), _NEWEST_FIRST),
    Query(JOBS, ("uid",), _NEWEST_FIRST),
    Query(JOBS, ("uid", "project_id"), _NEWEST_FIRST),
    Query(JOBS, ("uid", "model_id"), _NEWEST_FIRST),
    # a project's children (delete), a model's versions (GET /models/{id}, delete, export)
    Query(MODELS, ("uid", "project_id")),
    Query(DATASETS, ("uid", "project_id")),
    Query(JOBS, ("uid", "project_id")),
    Query(VERSIONS, ("uid",)),
    # everything of a user (export, purge)
    Query(PROJECTS, ("uid",)),
    Query(MODELS, ("uid",)),
    Query(DATASETS, ("uid",)),
    Query(JOBS, ("uid",)),
)


# --- references and ownership --------------------------------------------------------------------


def new_id() -> str:
    return uuid.uuid4().hex


def _db() -> Any:
    return clients.firestore()


def ref(collection: str, record_id: str) -> Any:
    return _db().collection(collection).document(record_id)


def version_id(n: int) -> str:
    """The document id of version n: zero-padded, so ids sort as numbers."""
    return f"{n:09d}"


def version_ref(model_id: str, n: int) -> Any:
    return ref(MODELS, model_id).collection(VERSIONS).document(version_id(n))


def not_found(collection: str) -> Problem:
    what = _SINGULAR.get(collection, "record")
    return Problem(404, f"No {what} of yours has this id; it may have been deleted. Refresh the list.")


def owned(collection: str, record_id: Any, uid: str, *, deleting_ok: bool = False) -> dict[str, Any]:
    """The caller's record (with its `id`), or a 404 problem: for a malformed id, a missing record,
    another user's record, and a record being deleted (unless `deleting_ok`)."""
    return owned_in(collection, owned_ref(collection, record_id).get(), uid, deleting_ok=deleting_ok)


def owned_ref(collection: str, record_id: Any) -> Any:
    """The document of a caller's record, to read (alone, or in a batch with others), or a 404 problem
    for a malformed id (no read is made for one)."""
    if collection not in COLLECTIONS:
        raise ValueError(f"not a catalog collection: {collection!r}")
    if not isinstance(record_id, str) or not _ID.fullmatch(record_id):
        raise not_found(collection)
    return ref(collection, record_id)


def owned_in(collection: str, snap: Any, uid: str, *, deleting_ok: bool = False) -> dict[str, Any]:
    """`owned`'s verdict on a snapshot of the record's document (read by `owned_ref`)."""
    if not snap.exists:
        raise not_found(collection)
    doc = snap.to_dict()
    if doc.get("uid") != uid or (doc.get("deleting") and not deleting_ok):
        raise not_found(collection)
    return {**doc, "id": snap.id}


def owned_version(model: Mapping[str, Any], n: int, uid: str) -> dict[str, Any]:
    """Version n of the caller's model (already checked with `owned`), or 404."""
    snap = version_ref(model["id"], n).get()
    if not snap.exists or snap.get("uid") != uid:
        raise Problem(
            404, f"Model {model['id']} has no version {n}; allocate one with POST /models/{model['id']}/versions."
        )
    return snap.to_dict()


def prefix(uid: str, collection: str, record: Mapping[str, Any]) -> str:
    """The GCS prefix holding a record's objects (with the trailing slash)."""
    project = f"{objects.user_prefix(uid)}projects/"
    if collection == PROJECTS:
        return f"{project}{record['id']}/"
    return f"{project}{record['project_id']}/{collection}/{record['id']}/"


# --- queries -------------------------------------------------------------------------------------


def _query(collection: str, equal: Mapping[str, str], *, newest_first: bool = False, parent: Any = None) -> Any:
    """A declared query (see QUERIES): equality on the given fields, optionally newest first."""
    from google.cloud.firestore_v1.base_query import FieldFilter

    shape = Query(collection, tuple(equal), _NEWEST_FIRST if newest_first else ())
    if shape not in QUERIES:
        raise LookupError(f"undeclared query {shape}: add it to catalog.QUERIES (and infra's indexes)")
    query = (parent or _db()).collection(collection)
    for name, value in equal.items():
        query = query.where(filter=FieldFilter(name, "==", value))
    if newest_first:
        for name, direction in _NEWEST_FIRST:
            query = query.order_by(name, direction=direction)
    return query


def _stream(query: Any) -> list[Any]:
    return list(query.stream(**clients.opts()))  # see clients: a stream needs its retry to resume


def _newest_first(versions: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(versions, key=lambda v: v.get("version", 0), reverse=True)


def _versions(model_id: str, uid: str) -> list[dict[str, Any]]:
    """A model's version documents, newest first."""
    return _newest_first(s.to_dict() for s in _stream(_query(VERSIONS, {"uid": uid}, parent=ref(MODELS, model_id))))


def _versions_of(models: list[dict[str, Any]], uid: str) -> dict[str, list[dict[str, Any]]]:
    """The versions of several models in one batched read: a model's numbers run from 1 to
    next_version - 1 (a number whose version was never created simply reads as missing)."""
    refs = [version_ref(m["id"], n) for m in models for n in range(1, int(m.get("next_version") or 1))]
    found: dict[str, list[dict[str, Any]]] = {m["id"]: [] for m in models}
    for snap in clients.firestore().get_all(refs) if refs else ():
        doc = snap.to_dict() if snap.exists else None
        if doc and doc.get("uid") == uid and doc.get("model_id") in found:
            found[doc["model_id"]].append(doc)
    return {model_id: _newest_first(versions) for model_id, versions in found.items()}


# --- wire shapes ---------------------------------------------------------------------------------


def _json_text(value: dict[str, Any]) -> str:
    """The text stored for a JSON field (its size and depth were bounded by wire.JsonObject)."""
    return jsonvalues.compact_json(value)


def _json_value(stored: Any) -> dict[str, Any]:
    """A stored JSON field as an object. A value stored before the depth limit existed, and too deep
    to answer, reads as {} (rather than failing every list and export that contains it)."""
    if isinstance(stored, str):
        try:
            value = json.loads(stored)
        except (ValueError, RecursionError):
            return {}
    else:
        value = stored
    if not isinstance(value, dict) or jsonvalues.json_depth(value) > config.LIMITS.json_depth:
        return {}
    return value


def _times(doc: Mapping[str, Any]) -> dict[str, str]:
    return {
        "created_at": jsonvalues.jsonable(doc["created_at"]),
        "updated_at": jsonvalues.jsonable(doc.get("updated_at") or doc["created_at"]),
    }


def project_out(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": doc["id"], "name": doc["name"], **_times(doc)}


def version_out(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "version": doc["version"],
        "status": doc.get("status", "pending"),
        "failure": doc.get("failure"),
        "created_at": jsonvalues.jsonable(doc["created_at"]),
        "size_bytes": int(doc.get("size_bytes") or 0),
        "notes": doc.get("notes") or "",
    }


def model_out(doc: Mapping[str, Any], versions: Iterable[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    out = {
        "id": doc["id"],
        "project_id": doc["project_id"],
        "name": doc["name"],
        "config_json": _json_value(doc.get("config_json")),
        "latest_version": doc.get("latest_version"),
        **_times(doc),
    }
    if versions is not None:
        out["versions"] = [version_out(v) for v in versions]
    return out


def dataset_out(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": doc["id"],
        "project_id": doc["project_id"],
        "name": doc["name"],
        "schema_json": _json_value(doc.get("schema_json")),
        "status": doc.get("status", "pending"),
        "failure": doc.get("failure"),
        "object": doc.get("object"),
        "size_bytes": int(doc.get("size_bytes") or 0),
        "columns": list(doc.get("columns") or []),
        "row_count": doc.get("row_count"),
        **_times(doc),
    }


def job_out(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A job with whatever the recorder added (metrics, params, ...), minus internal fields."""
    out = {k: jsonvalues.jsonable(v) for k, v in doc.items() if k not in _INTERNAL}
    out.update(
        {"version": doc.get("version"), "dataset_id": doc.get("dataset_id"), "name": doc.get("name", ""), **_times(doc)}
    )
    return out


_OUT = {PROJECTS: project_out, MODELS: model_out, DATASETS: dataset_out, JOBS: job_out}


# --- create --------------------------------------------------------------------------------------


def _stamp(uid: str, fields: dict[str, Any]) -> dict[str, Any]:
    now = clock.now()
    return {"uid": uid, **fields, "created_at": now, "updated_at": now}


def counts_ref(uid: str) -> Any:
    return _db().collection(COUNTS).document(uid)


def _seed_counts(uid: str) -> None:
    """The first counted create of a user counts what they already have (records made before the
    counters existed); a concurrent seed that loses the race simply finds the document made."""
    from google.api_core.exceptions import AlreadyExists

    cref = counts_ref(uid)
    if cref.get().exists:
        return
    counted = {}
    for collection in COLLECTIONS:
        result = _query(collection, {"uid": uid}).count().get(**clients.opts())
        counted[collection] = int(result[0][0].value)
    with contextlib.suppress(AlreadyExists):
        cref.create({**counted, "updated_at": clock.now()})


_LIMIT_NOUNS = {
    PROJECTS: "projects",
    MODELS: "models",
    DATASETS: "datasets",
    JOBS: "training runs",
    "versions_per_model": "versions of one model",
}


def limit_reached(resource: str, limit: int, plan: config.Plan, advice: str) -> Problem:
    """409 limit-reached, naming the limit (`resource`, `limit` members too, for clients)."""
    more = " PRO allows more." if plan.id == "free" else ""
    return Problem(
        409,
        f"Your plan allows {limit} {_LIMIT_NOUNS[resource]}; you have reached that limit. {advice}{more}",
        slug="limit-reached",
        title="Limit reached",
        extensions={"resource": resource, "limit": limit},
    )


def plan_reads(uid: str) -> list[Any]:
    """What a create reads first, to read with the session's liveness check (mllab.api.http, `reads`):
    the user's entitlement, for the plan's limits."""
    return [entitlements.ref(uid)]


def _plan(uid: str, read: Mapping[str, Any] | None) -> config.Plan:
    """The user's plan now, from the entitlement in `read` (see plan_reads) or read here."""
    snap = (read or {}).get(entitlements.ref(uid).path)
    return entitlements.plan_of(entitlements.doc_in(snap) if snap is not None else entitlements.get(uid), clock.now())


def _reserve(uid: str, collection: str, read: Mapping[str, Any] | None = None) -> None:
    """Take one place of the plan's limit for a new record, or answer 409 limit-reached."""
    from google.api_core.exceptions import NotFound
    from google.cloud.firestore_v1 import Increment

    plan = _plan(uid, read)
    limit = int(getattr(plan, collection))
    change = {collection: Increment(1), "updated_at": clock.now()}
    try:
        result = counts_ref(uid).update(change)
    except NotFound:  # the user's first counted create: count what they have, then take the place
        _seed_counts(uid)
        result = counts_ref(uid).update(change)
    if int(result.transform_results[0].integer_value) > limit:
        _release(uid, collection, 1)
        raise limit_reached(collection, limit, plan, f"Delete a {_SINGULAR[collection]} you no longer need first.")


def _release(uid: str, collection: str, n: int, batch: Any = None) -> None:
    from google.cloud.firestore_v1 import Increment

    if n <= 0:
        return
    change = {collection: Increment(-n), "updated_at": clock.now()}
    if batch is not None:
        batch.set(counts_ref(uid), change, merge=True)
    else:
        counts_ref(uid).set(change, merge=True)


def _create(
    collection: str, doc: dict[str, Any], parents: Iterable[tuple[str, str]], read: Mapping[str, Any] | None
) -> str:
    """Reserve a place (the plan's limit), write the new record, then check its parents again (see
    the module docstring): if one is gone or being deleted, take the record back and answer that
    parent's 404. `read`: the snapshots of `plan_reads`, when already read."""
    uid = doc["uid"]
    _reserve(uid, collection, read)
    record_id = new_id()
    new_ref = ref(collection, record_id)
    try:
        new_ref.create(doc)
    except BaseException:
        _release(uid, collection, 1)
        raise
    try:
        _recheck(uid, parents, [new_ref])
    except Problem:
        _release(uid, collection, 1)
        raise
    return record_id


def _recheck(uid: str, parents: Iterable[tuple[str, str]], written: list[Any]) -> None:
    try:
        for parent_collection, parent_id in parents:
            owned(parent_collection, parent_id, uid)
    except Problem:
        for r in written:
            r.delete()
        raise


def create_project(uid: str, body: schemas.CreateProject, read: Mapping[str, Any] | None = None) -> dict[str, Any]:
    doc = _stamp(uid, {"name": body.name})
    record_id = _create(PROJECTS, doc, (), read)
    return project_out({**doc, "id": record_id})


def create_model(uid: str, body: schemas.CreateModel, read: Mapping[str, Any] | None = None) -> dict[str, Any]:
    owned(PROJECTS, body.project_id, uid)
    doc = _stamp(
        uid,
        {
            "project_id": body.project_id,
            "name": body.name,
            "config_json": _json_text(body.config_json),
            "framework": FRAMEWORK,
            "latest_version": None,
            "next_version": 1,
        },
    )
    record_id = _create(MODELS, doc, [(PROJECTS, body.project_id)], read)
    return model_out({**doc, "id": record_id}, versions=[])


def create_dataset(uid: str, body: schemas.CreateDataset, read: Mapping[str, Any] | None = None) -> dict[str, Any]:
    owned(PROJECTS, body.project_id, uid)
    doc = _stamp(
        uid,
        {
            "project_id": body.project_id,
            "name": body.name,
            "schema_json": _json_text(body.schema_json),
            "status": "pending",
            "object": None,
            "size_bytes": 0,
            "columns": [],
            "row_count": None,
        },
    )
    record_id = _create(DATASETS, doc, [(PROJECTS, body.project_id)], read)
    return dataset_out({**doc, "id": record_id})


def create_job(uid: str, body: schemas.CreateJob, read: Mapping[str, Any] | None = None) -> dict[str, Any]:
    owned(PROJECTS, body.project_id, uid)
    model = owned(MODELS, body.model_id, uid)
    if model["project_id"] != body.project_id:
        raise Problem(404, "No model of yours in this project has this id; pick a model of the same project.")
    if body.version is not None:
        owned_version(model, body.version, uid)
    parents = [(PROJECTS, body.project_id), (MODELS, body.model_id)]
    if body.dataset_id is not None:
        dataset = owned(DATASETS, body.dataset_id, uid)
        if dataset["project_id"] != body.project_id:
            raise Problem(404, "No dataset of yours in this project has this id; pick a dataset of the same project.")
        parents.append((DATASETS, body.dataset_id))
    doc = _stamp(
        uid,
        {
            "project_id": body.project_id,
            "model_id": body.model_id,
            "version": body.version,
            "dataset_id": body.dataset_id,
            "name": body.name,
            "status": "created",
        },
    )
    record_id = _create(JOBS, doc, parents, read)
    return job_out({**doc, "id": record_id})


def allocate_version(uid: str, model_id: str) -> dict[str, Any]:
    """The model's next version number, as a `pending` version. Numbers come from an atomic increment
    of `next_version` (the commit answers the incremented value), so concurrent calls never share a
    number and never contend the way read-write transactions on one document do.
    A number whose version could not be created is skipped, never reused.
    Four round trips: the model and the plan read together, the increment, the create, the recheck
    (which also catches a delete of the model begun meanwhile: the module docstring)."""
    from google.api_core.exceptions import AlreadyExists, NotFound
    from google.cloud.firestore_v1 import Increment

    model_ref, plan_ref = owned_ref(MODELS, model_id), entitlements.ref(uid)
    got = clients.read_all([model_ref, plan_ref])
    model = owned_in(MODELS, got[model_ref.path], uid)
    now = clock.now()
    try:
        result = model_ref.update({"next_version": Increment(1), "updated_at": now})
    except NotFound:
        raise not_found(MODELS) from None
    n = int(result.transform_results[0].integer_value) - 1
    plan = entitlements.plan_of(entitlements.doc_in(got[plan_ref.path]), now)
    if n > plan.versions_per_model:  # numbers are never reused, so this bounds the versions for good
        raise limit_reached(
            "versions_per_model",
            plan.versions_per_model,
            plan,
            "Create a new model (or delete this one) to save more versions.",
        )
    doc = {
        "uid": uid,
        "model_id": model_id,
        "project_id": model["project_id"],
        "version": n,
        "status": "pending",
        "files": {},
        "size_bytes": 0,
        "created_at": now,
        "updated_at": now,
    }
    vref = version_ref(model_id, n)
    try:
        vref.create(doc)
    except AlreadyExists:
        log.warning("version already exists", model_id=model_id, version=n)
        raise Problem(409, "That version number was taken; try again.") from None
    _recheck(uid, [(MODELS, model_id)], [vref])
    return version_out(doc)


def set_version_notes(uid: str, model_id: str, version: str, body: schemas.VersionNotes) -> dict[str, Any]:
    """The owner's note on a version (what changed, why it is better); the version itself is unchanged."""
    from google.api_core.exceptions import NotFound

    model = owned(MODELS, model_id, uid)
    n = int(version) if version.isdigit() and len(version) <= 9 else 0
    if n < 1:
        raise Problem(404, f"Model {model_id} has no version {version[:20]!r}.")
    doc = owned_version(model, n, uid)
    now = clock.now()
    try:
        version_ref(model_id, n).update({"notes": body.notes, "updated_at": now})
    except NotFound:
        raise not_found(MODELS) from None
    return version_out({**doc, "notes": body.notes})


# --- read ----------------------------------------------------------------------------------------


def get(collection: str, record_id: str, uid: str) -> dict[str, Any]:
    doc = owned(collection, record_id, uid)
    if collection == MODELS:
        return model_out(doc, _versions(record_id, uid))
    return _OUT[collection](doc)


def _query_error(field: str, message: str) -> Problem:
    return Problem(
        422,
        "Some query parameters are invalid; see `errors`.",
        errors=[{"field": f"query.{field}", "message": message}],
    )


def _limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    if not re.fullmatch(r"[0-9]{1,4}", raw) or not 1 <= int(raw) <= MAX_LIMIT:
        raise _query_error("limit", f"a whole number from 1 to {MAX_LIMIT}")
    return int(raw)


def encode_cursor(doc_created_at: datetime, record_id: str) -> str:
    micros = (doc_created_at - _EPOCH) // timedelta(microseconds=1)
    return base64.urlsafe_b64encode(json.dumps([micros, record_id]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    bad = Problem(400, "The cursor is not one this list gave out; list again without it.", slug="bad-cursor")
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,200}", cursor):
        raise bad
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError):
        raise bad from None
    if (
        not isinstance(value, list)
        or len(value) != 2
        or type(value[0]) is not int
        or not isinstance(value[1], str)
        or not _ID.fullmatch(value[1])
    ):
        raise bad
    try:
        return _EPOCH + timedelta(microseconds=value[0]), value[1]
    except OverflowError:
        raise bad from None


def _switch(args: Mapping[str, str], name: str) -> bool:
    value = args.get(name, "false")
    if value not in ("true", "false"):
        raise _query_error(name, "true or false")
    return value == "true"


def list_records(collection: str, uid: str, args: Mapping[str, str]) -> dict[str, Any]:
    """One page, newest first: {"items", "next_cursor"}. Filters are equality on the caller's records;
    a filter naming someone else's id simply matches nothing."""
    allowed = {"limit", "cursor", *LIST_FILTERS[collection], *LIST_OPTIONS[collection]}
    unknown = sorted(set(args) - allowed)
    if unknown:
        accepted = ", ".join(sorted(allowed))
        raise Problem(
            422,
            f"Unknown query parameter(s): {', '.join(unknown)}. This list takes {accepted}.",
            errors=[{"field": f"query.{k}", "message": "unknown parameter"} for k in unknown],
        )
    limit = _limit(args.get("limit"))
    after = decode_cursor(args["cursor"]) if "cursor" in args else None
    with_versions = _switch(args, "versions")
    equal = {"uid": uid}
    for name in LIST_FILTERS[collection]:
        if name in args:
            if not _ID.fullmatch(args[name]):
                raise _query_error(name, "an id: 32 lower-case hex characters")
            equal[name] = args[name]
    same_project = None
    if "project_id" in equal and "model_id" in equal:
        # A model lives in one project and its jobs copy its project id, so a job matching the model
        # matches the project too, or none of them do: filter by model, check the project per item.
        same_project = equal.pop("project_id")
    query = _query(collection, equal, newest_first=True).limit(limit + 1)
    if after is not None:
        query = query.start_after({"created_at": after[0], "__name__": after[1]})
    snaps = _stream(query)
    page, more = snaps[:limit], len(snaps) > limit
    docs = {snap.id: {**snap.to_dict(), "id": snap.id} for snap in page}
    shown = [
        d for d in docs.values() if not d.get("deleting") and not (same_project and d.get("project_id") != same_project)
    ]
    versions = _versions_of(shown, uid) if with_versions else {}
    # One page stays under LIMITS.list_page_bytes: it ends early (with a cursor) once the next item
    # would pass the budget; the first item always fits (each is bounded by the field limits).
    items: list[dict[str, Any]] = []
    budget, last = config.LIMITS.list_page_bytes, None
    for snap in page:
        d = docs[snap.id]
        if d.get("deleting") or (same_project and d.get("project_id") != same_project):
            last = snap
            continue
        item = model_out(d, versions[d["id"]]) if with_versions else _OUT[collection](d)
        size = len(jsonvalues.compact_json(jsonvalues.jsonable(item)).encode()) + 1
        if items and size > budget:
            more = True
            break
        budget -= size
        items.append(item)
        last = snap
    next_cursor = encode_cursor(last.get("created_at"), last.id) if more and last is not None else None
    return {"items": items, "next_cursor": next_cursor}


# --- rename --------------------------------------------------------------------------------------


def rename(collection: str, record_id: str, uid: str, body: schemas.Rename) -> dict[str, Any]:
    from google.api_core.exceptions import NotFound

    doc = owned(collection, record_id, uid)
    now = clock.now()
    try:
        ref(collection, record_id).update({"name": body.name, "updated_at": now})
    except NotFound:
        raise not_found(collection) from None
    doc.update(name=body.name, updated_at=now)
    if collection == MODELS:
        return model_out(doc, _versions(record_id, uid))
    return _OUT[collection](doc)


# --- delete --------------------------------------------------------------------------------------


def delete_objects(object_prefix: str) -> int:
    """Delete every object under a prefix (the recorder frees their quota on OBJECT_DELETE)."""
    from mllab.files import store

    return store.delete_prefix(object_prefix)


def _delete_refs(refs: list[Any]) -> int:
    return clients.delete_refs(refs, _BATCH)


def _delete_counted(refs: list[Any], uid: str, collection: str) -> int:
    """Delete top-level records, giving their places back in the same batch (see COUNTS). Each delete
    requires its record to exist, so when two requests delete the same record at once only one batch
    commits and the place is given back once (else parallel deletes would free places never taken)."""
    from google.api_core.exceptions import NotFound

    removed = 0
    for start in range(0, len(refs), _BATCH):
        chunk = refs[start : start + _BATCH]
        try:
            removed += _delete_batch(chunk, uid, collection)
        except NotFound:  # one of them is gone already: the rest one by one, each counted once
            for r in chunk:
                with contextlib.suppress(NotFound):
                    removed += _delete_batch([r], uid, collection)
    return removed


def _delete_batch(chunk: list[Any], uid: str, collection: str) -> int:
    db = _db()
    batch = db.batch()
    for r in chunk:
        batch.delete(r, option=db.write_option(exists=True))
    _release(uid, collection, len(chunk), batch)
    batch.commit()
    return len(chunk)


def _delete_model_records(model_ids: Iterable[str], uid: str) -> tuple[int, int]:
    """Delete models with their versions: (models, versions) removed."""
    versions: list[Any] = []
    models: list[Any] = []
    for model_id in model_ids:
        model_ref = ref(MODELS, model_id)
        versions += [s.reference for s in _stream(_query(VERSIONS, {"uid": uid}, parent=model_ref))]
        models.append(model_ref)
    _delete_refs(versions)  # versions first: a failure leaves the (marked) model for a retry to find
    return _delete_counted(models, uid, MODELS), len(versions)


def _mark_deleting(refs: list[Any], now: datetime) -> None:
    """Children of a project being deleted answer 404 from now on, like the project."""
    from google.api_core.exceptions import NotFound

    db = _db()
    for start in range(0, len(refs), _BATCH):
        batch = db.batch()
        for r in refs[start : start + _BATCH]:
            batch.update(r, {"deleting": now})
        try:
            batch.commit()
        except NotFound:  # one was deleted meanwhile (by its own DELETE): mark the rest one by one
            for r in refs[start : start + _BATCH]:
                with contextlib.suppress(NotFound):
                    r.update({"deleting": now})


def delete(collection: str, record_id: str, uid: str, *, ip: str | None = None) -> None:
    """Delete a record, its child records and every object under its prefix (see the module
    docstring for the order). Idempotent while the record exists; retried after a failure, it
    finishes the job."""
    from google.api_core.exceptions import NotFound

    doc = owned(collection, record_id, uid, deleting_ok=True)
    _seed_counts(uid)  # so the places given back are taken off counts that include these records
    now = clock.now()
    try:
        ref(collection, record_id).update({"deleting": now, "updated_at": now})
    except NotFound:
        raise not_found(collection) from None
    children: dict[str, list[str]] = {}
    if collection == PROJECTS:
        children = {
            c: [s.id for s in _stream(_query(c, {"uid": uid, "project_id": record_id}))]
            for c in (MODELS, DATASETS, JOBS)
        }
        _mark_deleting([ref(c, i) for c, ids in children.items() for i in ids], now)
    removed = {"objects": delete_objects(prefix(uid, collection, doc))}
    if collection == PROJECTS:
        removed[MODELS], removed[VERSIONS] = _delete_model_records(children[MODELS], uid)
        for c in (DATASETS, JOBS):
            removed[c] = _delete_counted([ref(c, i) for i in children[c]], uid, c)
        _delete_counted([ref(PROJECTS, record_id)], uid, PROJECTS)
    elif collection == MODELS:
        _, removed[VERSIONS] = _delete_model_records([record_id], uid)
    else:
        _delete_counted([ref(collection, record_id)], uid, collection)
    kind = _SINGULAR[collection].replace("training ", "")
    audit.record(f"{kind}.delete", actor=uid, target=f"{collection}:{record_id}", ip=ip, removed=removed)


# --- account export and purge (rows of accounts.EXPORT_SECTIONS / PURGE_STEPS) ------------------


def _all(collection: str, uid: str) -> list[dict[str, Any]]:
    docs = [{**s.to_dict(), "id": s.id} for s in _stream(_query(collection, {"uid": uid}))]
    return sorted(docs, key=lambda d: d["created_at"])


def export_projects(uid: str) -> list[dict[str, Any]]:
    return [project_out(d) for d in _all(PROJECTS, uid)]


def export_models(uid: str) -> list[dict[str, Any]]:
    out = []
    for doc in _all(MODELS, uid):
        versions = [
            {k: jsonvalues.jsonable(v) for k, v in ver.items() if k not in _INTERNAL}
            for ver in reversed(_versions(doc["id"], uid))
        ]
        out.append({**model_out(doc), "framework": doc.get("framework", FRAMEWORK), "versions": versions})
    return out


def export_datasets(uid: str) -> list[dict[str, Any]]:
    return [dataset_out(d) for d in _all(DATASETS, uid)]


def export_jobs(uid: str) -> list[dict[str, Any]]:
    return [job_out(d) for d in _all(JOBS, uid)]


def purge_records(uid: str, user: Mapping[str, Any]) -> int:
    """Every catalog record of a user (models with their versions): how many documents went."""
    models, versions = _delete_model_records([d["id"] for d in _all(MODELS, uid)], uid)
    rest = sum(_delete_refs([ref(c, d["id"]) for d in _all(c, uid)]) for c in (PROJECTS, DATASETS, JOBS))
    return models + versions + rest + _delete_refs([counts_ref(uid)])


def purge_objects(uid: str, user: Mapping[str, Any]) -> int:
    """Every object under the user's prefix."""
    return delete_objects(objects.user_prefix(uid))
