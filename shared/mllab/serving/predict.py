"""POST /predict/{deployment_id} behind an API key: who may call, whether the deployment answers,
the quota, the cached model, the count.

Per request: one batched read of the key and the deployment; the owner (their account and plan) read
at most every OWNER_TTL_S per process; the model from the process's cache. What a call misses of the
owner, the month's usage sums and the version document (a new instance's first call misses all
three) is read in one second batch. In this order, so each
answer gives away nothing its caller may not know: a malformed, unknown or wrong key is 401 before
anything about the deployment is looked at; a valid key on another user's (or an unknown) deployment
is 404; a key not listing this deployment is 403; a deleted owner's key is 401; an owner without PRO
gets 402 (paused, nothing deleted); over the month's quota is 429 with Retry-After at the month's
start; bad instances are 422 naming instance and field."""

from __future__ import annotations

import threading
import time
from typing import Any

from mllab.billing import entitlements
from mllab.files import catalog
from mllab.identity import users
from mllab.platform import clients, clock, config, ratelimit
from mllab.platform.problems import Problem

from . import apikeys, deployments, metering, preprocessing, store
from .predictor import MAX_INSTANCES

SCOPE = "predict"
OWNER_TTL_S = 10.0  # how stale a process's view of an owner's plan and account may be
# Predictions a month per plan (free: no deployments at all).
PREDICTIONS_PER_MONTH = {p.id: p.predictions_per_month for p in config.PLANS.values()}  # the plans table's
PAUSED = (
    "This deployment is paused: its owner's PRO plan has ended. It answers again as soon as PRO is "
    "resumed; nothing was deleted."
)

SUSPECT_TTL_S = 15 * 60.0  # a subject that failed is checked against its budget this long (the window)

_owners: dict[str, tuple[float, str | None]] = {}  # uid -> (read at, plan id, or None for a gone account)
_owners_lock = threading.Lock()


def _owner_fresh(uid: str, now: float) -> tuple[bool, str | None]:
    with _owners_lock:
        hit = _owners.get(uid)
    return (True, hit[1]) if hit is not None and now - hit[0] < OWNER_TTL_S else (False, None)


def _owner_plan(uid: str) -> str | None:
    """The owner's plan id, or None when the account is deleted or disabled (cached OWNER_TTL_S)."""
    now = time.monotonic()
    fresh, plan = _owner_fresh(uid, now)
    if fresh:
        return plan
    refs = _owner_refs(uid)
    got = {s.reference.path: s for s in clients.firestore().get_all(refs, timeout=clients.deadline())}
    return _remember_owner(uid, now, [got[r.path] for r in refs])


def _owner_refs(uid: str) -> list[Any]:
    """The owner's user and entitlement documents."""
    return [clients.firestore().collection(users.USERS).document(uid), entitlements.ref(uid)]


def _remember_owner(uid: str, read_at: float, snaps: list[Any]) -> str | None:
    """The plan the owner's documents (as _owner_refs lists them, read from `read_at` on) give, kept."""
    user, entitlement = (s.to_dict() if s.exists else None for s in snaps)
    plan: str | None = None
    if user and not user.get("disabled") and not user.get("deleted_at"):
        plan = entitlements.plan_of(entitlement, clock.now()).id
    with _owners_lock:
        if len(_owners) > 10_000:
            _owners.clear()
        _owners[uid] = (read_at, plan)
    return plan


def _prefetch(uid: str, dep: dict[str, Any]) -> dict[str, Any] | None:
    """What this call needs and the process does not hold (the owner's documents, the month's usage
    shards, the version document of a model not cached yet), read in one round trip when two or more
    are missing, as on a new instance's first call, instead of one each; with one or none, each is read
    where it is needed. Returns the version document when it was read."""
    now = time.monotonic()
    owner = [] if _owner_fresh(uid, now)[0] else _owner_refs(uid)
    month, usage = metering.stale_refs(uid)
    model_id, n = dep["model_id"], dep["version"]
    version = [] if store.cached(model_id, n) else [catalog.version_ref(model_id, n)]
    if len([g for g in (owner, usage, version) if g]) < 2:
        return None
    got = {
        s.reference.path: s for s in clients.firestore().get_all([*owner, *usage, *version], timeout=clients.deadline())
    }
    if owner:
        _remember_owner(uid, now, [got[r.path] for r in owner])
    if usage:
        metering.absorb(uid, month, now, [got[r.path] for r in usage])
    return {**(got[version[0].path].to_dict() or {}), "version": n} if version else None


def _instances(body: Any) -> list[dict[str, Any]]:
    """The body's instances, checked to the route's model (mllab.serving.schemas.PredictRequest: the edge
    leaves this route's body to us, so its path loads no pydantic; a unit test holds the two together)."""
    if not isinstance(body, dict) or not isinstance(body.get("instances"), list):
        raise Problem(
            422,
            'Send {"instances": [{"<feature>": value, ...}, ...]}.',
            errors=[{"field": "instances", "message": "a list of objects is required"}],
        )
    extra = sorted(set(body) - {"instances"})
    if extra:
        raise Problem(422, f"Unknown field: {extra[0][:40]}.", errors=[{"field": extra[0][:40], "message": "unknown"}])
    instances = body["instances"]
    if not 1 <= len(instances) <= MAX_INSTANCES:
        raise Problem(
            422,
            f"Send 1 to {MAX_INSTANCES} instances.",
            errors=[{"field": "instances", "message": f"1 to {MAX_INSTANCES} items"}],
        )
    bad = next((i for i, instance in enumerate(instances) if type(instance) is not dict), None)
    if bad is not None:
        message = f"an instance is an object of feature values, not {preprocessing.describe(instances[bad])}"
        raise Problem(422, f"instance {bad}: {message}", errors=[{"field": f"instances.{bad}", "message": message}])
    return instances


# Failed keys are budgeted per (key prefix, client address) and per client address (ratelimit: a
# sliding window in Firestore, shared by every process). The budget is read before a key is judged,
# but only for subjects that failed recently in this process: a key that never fails costs no extra
# read, and a guesser is checked from their first failure on (in each process they reach).
_suspects: dict[str, float] = {}  # subject -> monotonic time of its last failure here
_suspects_lock = threading.Lock()


Budgets = tuple[tuple[str, str], tuple[str, str]]


def _budgets(key_id: str | None, ip: str) -> Budgets:
    prefix = f"{apikeys.KEY_PREFIX}{key_id}" if key_id else "malformed"
    return ("api_key_pair", f"{prefix}|{ip}"), ("api_key_ip", ip)


def _check_budget(budgets: Budgets, ip: str) -> None:
    now = time.monotonic()
    with _suspects_lock:
        suspect = any(now - _suspects.get(subject, -SUSPECT_TTL_S) < SUSPECT_TTL_S for _, subject in budgets)
    if not suspect:
        return
    retry = max(r for _, r in ratelimit.estimates(*budgets))
    if retry:
        raise ratelimit.refuse(
            "api_key_pair", retry, ip=ip, detail=f"Too many failed API keys. Try again in {ratelimit.human(retry)}."
        )


def _count_failure(budgets: Budgets) -> None:
    with _suspects_lock:
        if len(_suspects) > 10_000:
            _suspects.clear()
        for _, subject in budgets:
            _suspects[subject] = time.monotonic()
    ratelimit.count(*budgets)


def predict(raw_key: str, deployment_id: str, body: Any, *, ip: str = "") -> dict[str, Any]:
    key_id = apikeys.parse(raw_key)
    budgets = _budgets(key_id, ip)
    _check_budget(budgets, ip)
    try:
        key, dep = _authenticate(raw_key, key_id, deployment_id)
    except Problem as problem:
        if problem.status == 401:
            _count_failure(budgets)
        raise
    uid = key["uid"]
    if dep is None or dep.get("uid") != uid:
        raise Problem(404, "No deployment of this key's owner has this id.")
    if not apikeys.allows(key, deployment_id):
        raise Problem(403, "This API key is not allowed to call this deployment.", slug="insufficient-scope")
    instances = _instances(body)
    version_doc = _prefetch(uid, dep)
    plan = _owner_plan(uid)
    if plan is None:
        raise Problem(401, "This API key belongs to a deleted account.", headers={"WWW-Authenticate": "Bearer"})
    quota = PREDICTIONS_PER_MONTH.get(plan, 0)
    if plan != "pro":
        raise Problem(402, PAUSED, slug="deployment-paused")
    if metering.used(uid) + len(instances) > quota:
        retry = metering.seconds_to_next_month()
        raise Problem(
            429,
            f"This month's {quota:,} predictions are used; the count starts again on "
            f"{clock.rfc3339(metering.next_month_start())[:10]}.",
            slug="quota-exceeded",
            headers={"Retry-After": str(retry)},
            extensions={"quota": quota},
        )
    version = dep["version"]
    model = store.get(dep["model_id"], version, _VersionLoader(dep["model_id"], version, version_doc))
    predictions = model.predict(instances)
    metering.record(uid, deployment_id, len(instances))
    apikeys.touch(key["id"], key.get("last_used_at"))
    return {"predictions": predictions, "deployment_id": deployment_id, "model_id": dep["model_id"], "version": version}


def _authenticate(raw_key: str, key_id: str | None, deployment_id: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    if key_id is None:
        raise Problem(401, apikeys.NOT_VALID, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
    key_doc, dep = _key_and_deployment(key_id, deployment_id)
    return apikeys.check(raw_key, key_id, key_doc, scope=SCOPE), dep


class _VersionLoader:
    """The version document, read only when the model is not cached yet (or as _prefetch read it)."""

    def __init__(self, model_id: str, version: int, read: dict[str, Any] | None = None) -> None:
        self.model_id, self.version, self.read = model_id, version, read

    def __call__(self) -> dict[str, Any]:
        if self.read is not None:
            return self.read
        snap = catalog.version_ref(self.model_id, self.version).get(timeout=clients.deadline())
        return {**(snap.to_dict() or {}), "version": self.version}


def _key_and_deployment(key_id: str, deployment_id: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    db = clients.firestore()
    key_ref = db.collection(apikeys.COLLECTION).document(key_id)
    refs = [key_ref]
    valid_id = deployment_id.isalnum() and len(deployment_id) <= 64
    if valid_id:
        refs.append(deployments.ref(deployment_id))
    found = {
        s.reference.path: (s.to_dict() if s.exists else None) for s in db.get_all(refs, timeout=clients.deadline())
    }
    dep = found.get(deployments.ref(deployment_id).path) if valid_id else None
    return found.get(key_ref.path), dep


def reset() -> None:
    with _owners_lock:
        _owners.clear()
    with _suspects_lock:
        _suspects.clear()
