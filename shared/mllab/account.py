"""The signed-in user's account: what /me answers, the session list, the data export, deletion
(soft, then purged for good after ACCOUNT_PURGE_AFTER_DAYS by the daily `purge_accounts` job).

Later issues add their collections in two places only: `EXPORT_SECTIONS` (what the export holds)
and `PURGE_STEPS` (what the purge removes).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import Field

from mllab.billing import entitlements, subscriptions
from mllab.billing.schemas import Subscription
from mllab.files import catalog, recorder
from mllab.files import schemas as file_schemas
from mllab.identity import passwords, sessions, users
from mllab.identity import schemas as identity_schemas
from mllab.platform import audit, clients, clock, config, jsonvalues, log, mail, ratelimit
from mllab.platform.problems import Problem
from mllab.platform.queries import Query
from mllab.platform.wire import ApiModel
from mllab.serving import apikeys, deployments, metering
from mllab.serving import schemas as serving_schemas


class Me(ApiModel):
    """What GET /me answers: the user with their plan and usage (it joins identity, billing and files, so
    it lives here rather than in identity's schemas, which sign-in paths load)."""

    uid: str
    email: str
    name: str
    role: Literal["user", "admin"]
    email_verified: bool
    providers: list[Literal["password", "google"]] = Field(
        default_factory=list, description="How this account signs in: a password, Google, or both"
    )
    subscription: Subscription
    usage: file_schemas.Usage
    predictions: serving_schemas.PredictionUsage = Field(default_factory=serving_schemas.PredictionUsage)
    csrf: str


# Internal fields never leave the server (the export answers a whitelist per collection).
USER_EXPORT_FIELDS = (
    "email",
    "name",
    "providers",
    "email_verified",
    "role",
    "disabled",
    "deleted_at",
    deployments.DEPLOYED_AT,
    "created_at",
    "updated_at",
)
IDENTITY_EXPORT_FIELDS = ("kind", "email", "iss", "sub", "created_at", "updated_at")  # never `hash`
SESSION_EXPORT_FIELDS = (
    "method",
    "user_agent",
    "ip",
    "created_ip",
    "created_at",
    "refreshed_at",
    "not_after",
    "revoked_at",
    "revoke_reason",
)  # never the counter or key version
AUDIT_EXPORT_FIELDS = ("action", "target", "outcome", "ip", "at", "request_id", "details")
_SESSION_ID = re.compile(r"[0-9a-f]{32}")
_BATCH = 400  # Firestore allows 500 writes per batch


# --- /me and /sessions ---------------------------------------------------------------------------


def me_reads(uid: str) -> list[Any]:
    """The documents /me shows, read with the session's liveness check (mllab.api.http, `reads`):
    the entitlement, storage usage and today's upload count."""
    return [entitlements.ref(uid), recorder.usage_ref(uid), recorder.day_ref(uid)]


def me(user: dict[str, Any], sid: str, read: dict[str, Any] | None = None) -> Me:
    """The Me document: who, which plan (recomputed for now), how much of it is used. `read`: the
    snapshots of `me_reads` when the liveness check read them; the rest is read in one round trip."""
    uid, now = user["uid"], clock.now()
    refs = me_reads(uid)
    month = metering.month_of(now)
    # This month's prediction shards only for a user who has made a deployment (none else can predict).
    shards = metering.shard_refs(uid, month) if deployments.ever_deployed(user) else []
    read = read or {}
    snaps = {**read, **clients.read_all([r for r in [*refs, *shards] if r.path not in read])}
    ent_snap, usage_snap, day_snap = (snaps[ref.path] for ref in refs)
    ent = entitlements.doc_in(ent_snap)
    predicted, _ = metering.summed(snaps[ref.path] for ref in shards)
    plan = entitlements.plan_of(ent, now)
    usage = file_schemas.Usage(
        storage_bytes=recorder.stored_bytes(usage_snap),
        storage_limit_bytes=plan.storage_bytes,
        uploads_today=recorder.uploads_counted(day_snap),
        uploads_limit=plan.uploads_per_day,
    )
    predictions = serving_schemas.PredictionUsage(month=month, predictions=predicted, limit=plan.predictions_per_month)
    return Me(
        **users.public(user),
        subscription=entitlements.view(ent, now),
        usage=usage,
        predictions=predictions,
        csrf=sessions.csrf_token(sid),
    )


def _expires_at(s: dict[str, Any]) -> datetime:
    """When the session ends if unused: the idle limit or the absolute limit, whichever is first."""
    return min(s["not_after"], s["refreshed_at"] + timedelta(seconds=config.LIMITS.refresh_idle_s))


def session_list(uid: str, current_sid: str) -> identity_schemas.SessionList:
    """The user's live sessions, newest first (idle-expired ones are left out: they can't refresh)."""
    now = clock.now()
    items = [
        identity_schemas.SessionInfo(
            id=s["id"],
            method=s.get("method", ""),
            user_agent=s.get("user_agent", ""),
            ip=s.get("ip", ""),
            created_at=clock.rfc3339(s["created_at"]),
            refreshed_at=clock.rfc3339(s["refreshed_at"]),
            expires_at=clock.rfc3339(_expires_at(s)),
            current=s["id"] == current_sid,
        )
        for s in sessions.for_user(uid)
        if _expires_at(s) > now or s["id"] == current_sid
    ]
    return identity_schemas.SessionList(items=items, next_cursor=None)


def revoke_session(uid: str, sid: str, *, ip: str | None = None) -> None:
    """Sign out one of the caller's devices. Someone else's, unknown or already revoked: 404."""
    not_found = Problem(404, "No active session of yours has this id; refresh the list of devices.")
    if not _SESSION_ID.fullmatch(sid):
        raise not_found
    snap = clients.firestore().collection(sessions.COLLECTION).document(sid).get()
    if not snap.exists or snap.get("uid") != uid or snap.get("revoked_at"):
        raise not_found
    if not sessions.revoke(sid, "user_revoked"):
        raise not_found  # revoked meanwhile
    audit.record("session.revoke", actor=uid, target=f"session:{sid}", ip=ip)


# --- export --------------------------------------------------------------------------------------


def _pick(doc: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    return {f: jsonvalues.jsonable(doc[f]) for f in fields if f in doc}


def _export_identities(uid: str) -> list[dict[str, Any]]:
    return [_pick(i, IDENTITY_EXPORT_FIELDS) for i in users.identities_of(uid)]


def _export_sessions(uid: str) -> list[dict[str, Any]]:
    return [{"id": s["id"], **_pick(s, SESSION_EXPORT_FIELDS)} for s in sessions.for_user(uid, include_revoked=True)]


def _export_audit(uid: str) -> list[dict[str, Any]]:
    entries = sorted(audit.for_actor(uid), key=lambda e: e.get("at") or clock.now())
    return [_pick(e, AUDIT_EXPORT_FIELDS) for e in entries]


# (key in the export, collector). Add a collection by adding a row.
EXPORT_SECTIONS: list[tuple[str, Callable[[str], Any]]] = [
    ("identities", _export_identities),
    ("sessions", _export_sessions),
    ("audit", _export_audit),
    ("projects", catalog.export_projects),
    ("models", catalog.export_models),  # with their versions
    ("datasets", catalog.export_datasets),
    ("jobs", catalog.export_jobs),
    ("files", recorder.export_files),  # the stored files themselves (download each by its object name)
    ("entitlement", subscriptions.export_entitlement),
    ("subscriptions", subscriptions.export_subscriptions),  # PayPal subscription history
    ("promo_redemptions", subscriptions.export_redemptions),
    ("api_keys", apikeys.export_keys),  # never the key or its hash
    ("deployments", deployments.export_deployments),
    ("prediction_usage", metering.export_usage),  # per month and deployment, the shards summed
]


def export(uid: str) -> identity_schemas.AccountExport:
    user = users.get(uid)
    if user is None:
        raise Problem(404, "This account no longer exists.")
    data: dict[str, Any] = {"exported_at": clock.rfc3339(), "user": {"uid": uid, **_pick(user, USER_EXPORT_FIELDS)}}
    for key, collect in EXPORT_SECTIONS:
        data[key] = collect(uid)
    return identity_schemas.AccountExport.model_validate(data)


# --- deletion ------------------------------------------------------------------------------------


def delete_account(user: dict[str, Any], sid: str, *, password: str | None, ip: str | None = None) -> None:
    """Soft-delete after reauthentication: the account's password, or (no password sent) a session
    signed in within RECENT_SIGN_IN_S. Refusals are 403 "reauthentication required" (the access
    token itself is fine, so not 401, which the lab treats as "signed out"). Wrong passwords count
    against this session's budget, never the login counter (which strangers can fill)."""
    uid = user["uid"]
    _reauthenticate(uid, sid, password, ip)
    subscriptions.cancel_for_deletion(uid)  # first: if PayPal is down this fails and nothing is deleted
    now = clock.now()
    users.update(uid, deleted_at=now, disabled=True, tokens_valid_after=now)
    revoked = sessions.revoke_all(uid, "account_deleted")
    # API keys stop at once, and nothing of the account answers predictions or shows on a share page
    apikeys.revoke_all(uid)
    deployments.delete_user(uid)
    audit.record("account.delete", actor=uid, target=f"user:{uid}", ip=ip, sessions_revoked=revoked)
    log.info("account deleted", uid=uid, sessions_revoked=revoked)


def _reauthenticate(uid: str, sid: str, password: str | None, ip: str | None) -> None:
    if password is not None:
        identity = next((i for i in users.identities_of(uid) if i.get("kind") == "password"), None)
        if identity is None:
            passwords.dummy_verify(password)
            raise _reauth_problem(
                "This account has no password. Sign in again, then delete the account "
                f"within {config.RECENT_SIGN_IN_S // 60} minutes without one."
            )
        ratelimit.check("reauth_session", sid, ip=ip)  # per session: a stranger's guesses never count here
        if not passwords.verify(identity["hash"], password):
            ratelimit.fail("reauth_session", sid)
            audit.record("account.delete", actor=uid, target=f"user:{uid}", outcome="wrong_password", ip=ip)
            raise _reauth_problem("The password is wrong. Nothing was deleted.")
        return
    snap = clients.firestore().collection(sessions.COLLECTION).document(sid).get()
    created = snap.get("created_at") if snap.exists else None
    if created is None or clock.now() - created > timedelta(seconds=config.RECENT_SIGN_IN_S):
        raise _reauth_problem(
            f"Confirm with your password, or sign in again and delete the account within "
            f"{config.RECENT_SIGN_IN_S // 60} minutes."
        )


def _reauth_problem(detail: str) -> Problem:
    return Problem(403, detail, slug="reauthentication-required", title="Reauthentication required")


# --- purge ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PurgeStep:
    """Delete every document of `collection` whose `field` equals the user's uid (or, with
    `by_email`, the user's email), written as `template` says (e.g. "user:{}")."""

    collection: str
    field: str = "uid"
    by_email: bool = False
    template: str = "{}"


def purge_usage(uid: str, user: dict[str, Any]) -> int:
    ref = clients.firestore().collection(recorder.USAGE).document(uid)
    days = list(ref.collection(recorder.DAYS).list_documents())
    return clients.delete_refs([*days, ref])


# What a purge removes besides the user document (deleted last, so a failed run is retried whole).
# Add a collection by adding a row (or a callable taking (uid, user) and returning a count).
PURGE_STEPS: list[PurgeStep | Callable[[str, dict[str, Any]], int]] = [
    PurgeStep(users.IDENTITIES),
    PurgeStep(sessions.COLLECTION),
    PurgeStep(users.EMAIL_TOKENS),
    PurgeStep(mail.OUTBOX, field="to", by_email=True),
    catalog.purge_records,  # projects, models with their versions, datasets, jobs
    catalog.purge_objects,  # every file under users/<uid>/ (the recorder drops the events of a deleted account)
    PurgeStep(recorder.ARTIFACTS),  # the record of each stored file (it names the file)
    subscriptions.purge_billing,  # entitlement and redemptions; subscription records stay, anonymised, as the ledger
    purge_usage,  # the storage counter and the daily upload counts
    PurgeStep(apikeys.COLLECTION),  # revoked at deletion; their hashes go now
    PurgeStep(deployments.COLLECTION),  # deleted at deletion already; a retry finds none
    PurgeStep(metering.COLLECTION),  # the prediction counts per month
    # Last: the audit trail of the account (what it did, and what was done to it). What remains is the
    # purge's own entry, which names no one.
    PurgeStep(audit.COLLECTION, field="actor"),
    PurgeStep(audit.COLLECTION, field="target", template="user:{}"),
]

# Query shapes (for infra's index file): each purge row's owner filter, and the purge's cutoff.
QUERIES: tuple[Query, ...] = (
    *(Query(step.collection, (step.field,)) for step in PURGE_STEPS if isinstance(step, PurgeStep)),
    Query(users.USERS, (), (("deleted_at", "ASCENDING"),)),
)


def _delete_where(collection: str, field: str, value: Any) -> int:
    from google.cloud.firestore_v1.base_query import FieldFilter

    db = clients.firestore()
    query = db.collection(collection).where(filter=FieldFilter(field, "==", value))
    return clients.delete_refs([snap.reference for snap in query.stream(**clients.opts())], _BATCH)


def _run_step(step: PurgeStep | Callable[[str, dict[str, Any]], int], uid: str, user: dict[str, Any]) -> int:
    if isinstance(step, PurgeStep):
        value = user.get("email") if step.by_email else uid
        return _delete_where(step.collection, step.field, step.template.format(value)) if value else 0
    return step(uid, user)


def due_for_purge(now: datetime) -> list[dict[str, Any]]:
    from google.cloud.firestore_v1.base_query import FieldFilter

    cutoff = now - timedelta(days=config.ACCOUNT_PURGE_AFTER_DAYS)
    query = clients.firestore().collection(users.USERS).where(filter=FieldFilter("deleted_at", "<", cutoff))
    return [{**snap.to_dict(), "uid": snap.id} for snap in query.stream(**clients.opts())]


def purge(now: datetime) -> int:
    """Hard-delete every user soft-deleted more than ACCOUNT_PURGE_AFTER_DAYS before `now`, with what
    they own. Idempotent: a rerun (or a concurrent run) purges nothing twice and audits each user once."""
    from google.api_core.exceptions import NotFound

    db = clients.firestore()
    purged = 0
    for user in due_for_purge(now):
        uid = user["uid"]
        removed: dict[str, int] = {}
        for step in PURGE_STEPS:
            name = step.collection if isinstance(step, PurgeStep) else getattr(step, "__name__", "step")
            removed[name] = removed.get(name, 0) + _run_step(step, uid, user)
        try:
            db.collection(users.USERS).document(uid).delete(option=db.write_option(exists=True))
        except NotFound:
            continue  # a concurrent run got there first and audited it
        purged += 1
        # Anonymous on purpose: that an account was purged that day, and how much went; never whose.
        audit.record(
            "account.purge",
            actor="system",
            target=None,
            deleted_on=clock.rfc3339(user["deleted_at"])[:10],
            removed=removed,
        )
        log.info("account purged", uid=uid, removed=removed)
    return purged


def handle_purge_event(cloud_event: Any) -> int:
    """Entry point of `purge_accounts` (any message on the purge topic runs one purge)."""
    ctx = log.bind(event_id=str(cloud_event["id"]), function="purge_accounts")
    try:
        count = purge(clock.now())
        log.info("purge finished", purged=count)
        return count
    finally:
        log.unbind(ctx)
