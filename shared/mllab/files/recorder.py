"""The finalize recorder: what a stored object means, decided once per object generation.

At least once and in any order: each generation is one `artifacts/<sha256(bucket/object#generation)>`
document, created in the same transaction that adds its bytes to the owner's usage and updates what
it belongs to (a model version, a dataset, a training job). A redelivery finds the artifact and does
nothing; a delete that overtook its finalize leaves a tombstone that the late finalize respects.

The recorder enforces again what a signed URL cannot: an object outside the naming grammar, of the
wrong type, over its cap, for something the user does not own, over quota or over the day's uploads,
a second file for a version, dataset or run that already has its file (a replayed upload URL), or
content that cannot be stored and served (a metrics.json or a CSV header too large for its record)
is deleted, audited and never recorded; what it was meant for is marked `failed` with the reason,
for the lab to show. Every event is settled in the one delivery: only a transient failure is retried.
Storage usage and the daily upload count change only here (finalize adds, delete subtracts), so each
is counted exactly once, per recorded file.

Events for an account that is deleted (or already purged) are acknowledged and dropped: the object
is removed, and nothing is written that would name the account again.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from mllab.files import catalog, objects, schemas, store
from mllab.files.events import ObjectEvent
from mllab.identity import users
from mllab.platform import audit, clients, clock, config, jsonvalues, log, transactions
from mllab.platform.queries import Query

ARTIFACTS = "artifacts"  # artifacts/<ObjectEvent.key>: one per recorded (or tombstoned) generation
USAGE = "usage"
DAYS = "days"  # usage/<uid>/days/<YYYY-MM-DD>: {"uploads": files recorded that day (UTC)}
QUERIES: tuple[Query, ...] = (Query(ARTIFACTS, ("uid",)),)  # for infra's index file
# metrics.json as stored on its job (validated, then compact): within one Firestore document (1 MiB)
# beside the job's other fields. Above the upload cap, since validation may spell numbers longer
# ("1e9" is stored as 1000000000.0); a file that grows past it is refused, never retried.
METRICS_STORED_BYTES = 900 * 1024
GONE = "the account is deleted"  # an outcome: drop the event without naming the account anywhere


class Rejected(Exception):
    """The object breaks a rule: delete it, audit, acknowledge the event. With `fails` the record it
    was meant for is marked failed (unless it already has its file recorded)."""

    def __init__(self, reason: str, *, fails: bool = True) -> None:
        super().__init__(reason)
        self.fails = fails


def usage_ref(uid: str) -> Any:
    """A user's storage counter: {storage_bytes, ...}."""
    return _db().collection(USAGE).document(uid)


def stored_bytes(snap: Any) -> int:
    """The bytes a snapshot of `usage_ref` counts (0 before the user's first file)."""
    return int((snap.to_dict() or {}).get("storage_bytes", 0)) if snap.exists else 0


def uploads_counted(snap: Any) -> int:
    """The files a snapshot of `day_ref` counts (0 before the day's first)."""
    return int((snap.to_dict() or {}).get("uploads", 0)) if snap.exists else 0


def day_ref(uid: str) -> Any:
    """Today's (UTC) upload count of a user."""
    return usage_ref(uid).collection(DAYS).document(clock.now().strftime("%Y-%m-%d"))


def _account_gone(snap: Any) -> bool:
    return not snap.exists or bool((snap.to_dict() or {}).get("deleted_at"))


def _db() -> Any:
    return clients.firestore()


def _owner_ref(name: objects.ObjectName) -> Any:
    """The record the file belongs to (the grammar sets exactly the ids of its kind)."""
    if name.model_id is not None and name.version is not None:
        return catalog.version_ref(name.model_id, name.version)
    if name.dataset_id is not None:
        return catalog.ref(catalog.DATASETS, name.dataset_id)
    if name.job_id is not None:
        return catalog.ref(catalog.JOBS, name.job_id)
    raise ValueError(f"{name} names no record")


def _mimetype(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


# --- content checks that need the bytes (outside the transaction) --------------------------------


def _read_metrics(event: ObjectEvent) -> dict[str, Any]:
    data = store.read(event.name, event.generation)
    try:
        metrics = schemas.Metrics.model_validate_json(data).model_dump(mode="json")
    except ValidationError as exc:
        raise Rejected(f"metrics.json does not match the schema ({exc.error_count()} errors)") from None
    try:
        stored = len(jsonvalues.compact_json(metrics).encode())
    except ValueError:  # NaN or an infinity (a float too large for JSON)
        raise Rejected("metrics.json holds a number JSON cannot carry (NaN or infinity)") from None
    if stored > METRICS_STORED_BYTES:
        raise Rejected(f"metrics.json is {stored} bytes as stored; at most {METRICS_STORED_BYTES}")
    return metrics


def _scan_csv(event: ObjectEvent) -> tuple[list[str], int]:
    """Header columns and data-row count, streamed (never the whole file in memory)."""
    with store.open_object(event.name, event.generation) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", errors="strict", newline="")
        try:
            reader = csv.reader(text)
            header = next(reader, None)
            if not header or not any(h.strip() for h in header):
                raise Rejected("the CSV has no header row")
            # The header is stored on the dataset's record and served with it: bound it before reading on.
            limits = config.LIMITS
            if len(header) > limits.csv_columns:
                raise Rejected(f"the CSV has {len(header)} columns; at most {limits.csv_columns}")
            header_bytes = sum(len(h.strip().encode()) for h in header)
            if header_bytes > limits.csv_header_bytes:
                raise Rejected(f"the CSV header is {header_bytes} bytes; at most {limits.csv_header_bytes}")
            rows = sum(1 for row in reader if row)
        except (UnicodeDecodeError, csv.Error) as exc:
            raise Rejected(f"the CSV is not readable UTF-8 CSV ({type(exc).__name__})") from None
    return [h.strip() for h in header], rows


# --- finalize ------------------------------------------------------------------------------------


def handle(event: ObjectEvent) -> None:
    """What the `on_object_finalized` function does with a parsed event. Raises only for transient
    failures (so Pub/Sub retries)."""
    if event.event_type == "OBJECT_FINALIZE":
        finalize(event)
    elif event.event_type == "OBJECT_DELETE":
        delete(event)
    else:
        log.info("object event ignored", event_type=event.event_type, object=event.name)


def finalize(event: ObjectEvent) -> bool:
    """Record one finalized generation. True when this delivery recorded it."""
    s = config.settings()
    if event.bucket != s.bucket:
        log.warning("event for another bucket ignored", bucket=event.bucket)
        return False
    name = objects.parse(event.name)
    try:
        checked, size = _checked(event, name)
        outcome = _record(event, checked, size, _content(event, checked))
    except Rejected as exc:
        _reject(event, name, str(exc), fails=exc.fails)
        return False
    except Exception as exc:
        if not _settled_failure(event, name, exc):
            raise  # transient: fail the delivery so Pub/Sub retries
        return False
    return _settle(event, checked, outcome)


def _checked(event: ObjectEvent, name: objects.ObjectName | None) -> tuple[objects.ObjectName, int]:
    """The parsed name and the size, for an object that may be recorded; else Rejected."""
    if name is None:
        raise Rejected("the object name is outside the naming grammar")
    if _mimetype(event.content_type) != name.kind.content_type:
        raise Rejected(f"{name.kind.name} files must be {name.kind.content_type}, not {event.content_type!r}")
    if event.size is None or event.size > name.kind.max_bytes:
        raise Rejected(f"{name.kind.name} files can be at most {name.kind.max_bytes} bytes")
    return name, event.size


def _content(event: ObjectEvent, name: objects.ObjectName) -> dict[str, Any]:
    """What the record keeps of the file's content (read from the bucket, checked)."""
    extra: dict[str, Any] = {}
    if name.kind.name == "metrics":
        extra["metrics"] = _read_metrics(event)
    elif name.kind.name == "dataset":
        extra["columns"], extra["row_count"] = _scan_csv(event)
    return extra


def _settled_failure(event: ObjectEvent, name: objects.ObjectName | None, exc: Exception) -> bool:
    """Settle a failure that no retry would change: True when it was (the event is acknowledged)."""
    from google.api_core.exceptions import InvalidArgument, NotFound

    if isinstance(exc, InvalidArgument):  # Firestore refuses the write itself: it never will take it
        _reject(event, name, f"it cannot be stored ({str(exc)[:120]})")
        return True
    if not isinstance(exc, (NotFound, FileNotFoundError)):  # FileNotFoundError: the S3 store's
        return False
    log.info("object gone before it was recorded", object=event.name, generation=event.generation)
    return True


def _settle(event: ObjectEvent, name: objects.ObjectName, outcome: str) -> bool:
    """Act on what the transaction decided. True when this delivery recorded the file."""
    if outcome == "duplicate":
        log.info("duplicate object event ignored", key=event.key, object=event.name, generation=event.generation)
        return False
    if outcome == GONE:
        _delete_generation(event)
        log.info("object of a deleted account removed", object=event.name, generation=event.generation)
        return False
    if outcome != "recorded":
        _reject(event, name, outcome, fails=outcome not in _KEEPS_OWNER, live=True)
        return False
    log.info("object recorded", key=event.key, object=event.name, generation=event.generation, size=event.size)
    return True


# Refusals that say nothing about the record the file was meant for (it is fine, or not the user's).
_NOT_YOURS = "it belongs to nothing the user owns"
_BEING_DELETED = "what it belongs to is being deleted"
_ALREADY = "it already has this file recorded; a recorded file is never replaced"
_KEEPS_OWNER = (_NOT_YOURS, _BEING_DELETED, _ALREADY)
# A recorded file replaced in the bucket (GCS refuses that to our upload URLs; the newcomer is refused
# here too, so what the record described is gone): the record says so.
_OVERWRITTEN = "Its recorded file was overwritten by a second upload and could not be kept; save it again."


def _has_file(owner: dict[str, Any], name: objects.ObjectName) -> bool:
    """Whether the record already has (a generation of) the file this object would be."""
    kind = name.kind.name
    if kind in ("model", "weights"):
        fname = "model.json" if kind == "model" else "weights.bin"
        return fname in (owner.get("files") or {}) or fname in (owner.get("recorded") or [])
    if kind == "dataset":
        return bool(owner.get("generation"))
    return bool(owner.get("metrics_generation"))


def _record(event: ObjectEvent, name: objects.ObjectName, size: int, extra: dict[str, Any]) -> str:
    from google.cloud import firestore

    db = _db()
    art_ref = db.collection(ARTIFACTS).document(event.key)
    counter_ref = usage_ref(name.uid)
    user_ref = db.collection(users.USERS).document(name.uid)
    today_ref = day_ref(name.uid)
    owner_ref = _owner_ref(name)
    model_ref = catalog.ref(catalog.MODELS, name.model_id) if name.model_id else None
    now = clock.now()
    limits = config.LIMITS

    reads = [art_ref, user_ref, owner_ref, counter_ref, today_ref, *([model_ref] if model_ref is not None else [])]

    def run(tx: Any, snaps: dict[str, Any]) -> str:
        # Every read in the one round trip that also begins the transaction (mllab.platform.transactions),
        # then the commit: two round trips an event, so it holds its locks that much less.
        art, user, owner, usage, day = (snaps[ref.path] for ref in reads[:5])
        if art.exists:
            return "duplicate"  # recorded before, or a tombstone left by an earlier delete
        if _account_gone(user):
            return GONE
        o = owner.to_dict() if owner.exists else {}
        if o.get("uid") != name.uid or o.get("project_id") != name.project_id:
            return _NOT_YOURS
        if o.get("deleting"):
            return _BEING_DELETED
        if _has_file(o, name):
            return _ALREADY  # e.g. a second PUT with one upload URL: the version keeps its file
        used = (usage.to_dict() or {}).get("storage_bytes", 0) if usage.exists else 0
        if used + size > limits.pro_storage_bytes:
            return "the user's storage quota is full"
        if (int((day.to_dict() or {}).get("uploads", 0)) if day.exists else 0) >= limits.uploads_per_day:
            return f"the day's {limits.uploads_per_day} uploads are used up; upload again tomorrow (UTC)"
        model = snaps[model_ref.path] if model_ref is not None else None
        # All reads done; now the writes.
        tx.create(
            art_ref,
            {
                "bucket": event.bucket,
                "object": event.name,
                "generation": event.generation,
                "uid": name.uid,
                "kind": name.kind.name,
                "project_id": name.project_id,
                "model_id": name.model_id,
                "version": name.version,
                "dataset_id": name.dataset_id,
                "job_id": name.job_id,
                "size": event.size,
                "content_type": event.content_type,
                "crc32c": event.crc32c,
                "md5": event.md5,
                "event_id": event.event_id,
                "deleted_at": None,
                "created_at": now,
                "updated_at": now,
            },
        )
        tx.set(counter_ref, {"storage_bytes": firestore.Increment(size), "updated_at": now}, merge=True)
        tx.set(today_ref, {"uploads": firestore.Increment(1), "updated_at": now}, merge=True)
        _apply_to_owner(tx, owner_ref, o, model_ref, model, event, name, extra, now)
        return "recorded"

    return transactions.run(reads, run, queue=name.uid)  # a user's events share the usage and daily count


def _file_entry(event: ObjectEvent) -> dict[str, Any]:
    return {"object": event.name, "generation": event.generation, "size": event.size, "crc32c": event.crc32c}


def _apply_to_owner(
    tx: Any,
    owner_ref: Any,
    owner: dict[str, Any],
    model_ref: Any,
    model: Any,
    event: ObjectEvent,
    name: objects.ObjectName,
    extra: dict[str, Any],
    now: datetime,
) -> None:
    """Put the recorded file on its record (which, per _has_file, had none of this kind)."""
    kind = name.kind.name
    if kind in ("model", "weights"):
        fname = "model.json" if kind == "model" else "weights.bin"
        files = {**(owner.get("files") or {}), fname: _file_entry(event)}
        ready = {"model.json", "weights.bin"} <= set(files)
        tx.update(
            owner_ref,
            {
                "files": files,
                "status": "ready" if ready else "pending",
                "failure": None,
                # every file ever recorded on the version: none is ever replaced (see _has_file)
                "recorded": sorted({*(owner.get("recorded") or []), fname}),
                "size_bytes": sum(f["size"] for f in files.values()),
                "updated_at": now,
            },
        )
        if ready and model is not None and model.exists:
            latest = model.get("latest_version") or 0
            if name.version is not None and name.version > latest:  # only forward
                tx.update(model_ref, {"latest_version": name.version, "updated_at": now})
    elif kind == "dataset":
        tx.update(
            owner_ref,
            {
                "status": "ready",
                "failure": None,
                "object": event.name,
                "generation": event.generation,
                "size_bytes": event.size,
                "content_type": event.content_type,
                "crc32c": event.crc32c,
                "columns": extra["columns"],
                "row_count": extra["row_count"],
                "updated_at": now,
            },
        )
    else:
        m = extra["metrics"]
        # Stored as JSON text: Firestore refuses arrays inside arrays (a confusion matrix is one).
        tx.update(
            owner_ref,
            {
                "status": "recorded",
                "failure": None,
                "metrics_generation": event.generation,
                "task": m["task"],
                "backend": m["backend"],
                "started_at": m["started_at"],
                "finished_at": m["finished_at"],
                "epoch_count": len(m["epochs"]),
                "metrics_json": jsonvalues.compact_json(m),
                "updated_at": now,
            },
        )


def _delete_generation(event: ObjectEvent) -> None:
    """Delete exactly this generation (never a newer one)."""
    store.delete_generation(event.name, event.generation)


def _reject(
    event: ObjectEvent, name: objects.ObjectName | None, reason: str, *, fails: bool = True, live: bool = False
) -> None:
    """Delete exactly this generation; then, in one transaction, audit it (once per generation, however
    often its event comes) and (with `fails`) mark what it was meant for failed. `live`: the recording
    transaction has just read the account and found it live (it is not read again)."""
    _delete_generation(event)
    uid = name.uid if name else event.uid  # outside the grammar, the users/<uid>/ prefix still says whose
    user_ref = _db().collection(users.USERS).document(uid) if uid and not live else None
    owner_ref = _owner_ref(name) if fails and name is not None else None
    audit_ref = audit.keyed_ref(f"object.rejected-{event.key}")
    entry = audit.entry(
        "object.rejected", actor=uid, target=event.name, outcome="deleted", reason=reason, generation=event.generation
    )

    def run(tx: Any, snaps: dict[str, Any]) -> str:
        if user_ref is not None and _account_gone(snaps[user_ref.path]):
            return GONE  # no audit entry: it would name the account again after its purge
        if not snaps[audit_ref.path].exists:
            tx.create(audit_ref, entry)
        if owner_ref is not None and name is not None:
            _mark_failed(tx, owner_ref, snaps[owner_ref.path], name, reason)
        return "refused"

    reads = [ref for ref in (user_ref, owner_ref, audit_ref) if ref is not None]
    outcome = transactions.run(reads, run, queue=uid)
    if outcome == GONE:
        log.info("object of a deleted account removed", generation=event.generation)
        return
    audit.announce(entry)
    log.warning("object rejected and deleted", object=event.name, generation=event.generation, reason=reason)


def _mark_failed(tx: Any, owner_ref: Any, owner: Any, name: objects.ObjectName, reason: str) -> None:
    """The version, dataset or run the file was for: `failed`, with the reason the lab shows, unless it
    is not the user's, is being deleted, or has (meanwhile) recorded that file after all."""
    o = owner.to_dict() if owner.exists else {}
    if o.get("uid") != name.uid or o.get("project_id") != name.project_id or o.get("deleting"):
        return
    if _has_file(o, name):
        return
    kind = (
        "metrics.json"
        if name.kind.name == "metrics"
        else (
            "model.json" if name.kind.name == "model" else "weights.bin" if name.kind.name == "weights" else "CSV file"
        )
    )
    tx.update(
        owner_ref, {"status": "failed", "failure": f"The {kind} was refused: {reason}.", "updated_at": clock.now()}
    )


# --- delete --------------------------------------------------------------------------------------


def delete(event: ObjectEvent) -> None:
    """Reverse a recorded generation once: usage down, the file off its owner. A delete that arrives
    before its finalize leaves a tombstone so the late finalize records nothing."""
    from google.cloud import firestore

    db = _db()
    art_ref = db.collection(ARTIFACTS).document(event.key)
    name = objects.parse(event.name)
    now = clock.now()

    uid = name.uid if name else event.uid
    if not uid:
        log.info("object deletion of a deleted account dropped", generation=event.generation)
        return
    user_ref = db.collection(users.USERS).document(uid)
    owner_ref = _owner_ref(name) if name else None
    # All in the read that begins the transaction (the owner's record even when it turns out unneeded:
    # one batch costs less than a second round trip).
    reads = [user_ref, art_ref, *([owner_ref] if owner_ref is not None else [])]

    def run(tx: Any, snaps: dict[str, Any]) -> str:
        if _account_gone(snaps[user_ref.path]):
            return "dropped"  # the account is deleted (its purge removes every object and record)
        art = snaps[art_ref.path]
        if not art.exists:
            tx.set(
                art_ref,
                {
                    "bucket": event.bucket,
                    "object": event.name,
                    "generation": event.generation,
                    "uid": uid,
                    "deleted_at": now,
                    "tombstone": True,
                    "created_at": now,
                    "updated_at": now,
                },
            )
            return "tombstone"
        a = art.to_dict()
        if a.get("deleted_at"):
            return "duplicate"
        owner = snaps[owner_ref.path] if owner_ref is not None else None
        tx.update(
            art_ref,
            {"deleted_at": now, "updated_at": now, "overwritten_by_generation": event.overwritten_by_generation},
        )
        if a.get("size") and a.get("uid"):
            tx.set(
                usage_ref(a["uid"]),
                {"storage_bytes": firestore.Increment(-a["size"]), "updated_at": now},
                merge=True,
            )
        if owner is not None and owner.exists and name is not None:
            _off_owner(tx, owner.reference, owner.to_dict(), name, event, now)
        return "reversed"

    outcome = transactions.run(reads, run, queue=uid)
    if outcome == "dropped":
        log.info("object deletion of a deleted account dropped", generation=event.generation)
        return
    log.info("object deletion recorded", key=event.key, object=event.name, generation=event.generation, outcome=outcome)


def _off_owner(
    tx: Any, owner_ref: Any, o: dict[str, Any], name: objects.ObjectName, event: ObjectEvent, now: datetime
) -> None:
    """Take a deleted generation off the record it was on (if it is the one recorded there)."""
    overwritten = event.overwritten_by_generation is not None
    lost = {"status": "failed", "failure": _OVERWRITTEN, "updated_at": now} if overwritten else {}
    if name.kind.name in ("model", "weights"):
        files = dict(o.get("files") or {})
        fname = "model.json" if name.kind.name == "model" else "weights.bin"
        if files.get(fname, {}).get("generation") == event.generation:
            files.pop(fname)
            tx.update(
                owner_ref,
                {
                    "files": files,
                    "status": "pending",
                    "size_bytes": sum(f["size"] for f in files.values()),
                    "updated_at": now,
                    **lost,
                },
            )
    elif overwritten and event.generation in (o.get("generation"), o.get("metrics_generation")):
        tx.update(owner_ref, lost)  # a dataset's CSV or a run's metrics.json, overwritten in place


def usage_of(uid: str) -> int:
    return stored_bytes(usage_ref(uid).get())


def uploads_today(uid: str) -> int:
    """Files recorded today (UTC)."""
    return uploads_counted(day_ref(uid).get())


def export_files(uid: str) -> list[dict[str, Any]]:
    """The user's stored files (live generations), for the account export; each can be fetched
    with GET /signed/download?object=."""
    from google.cloud.firestore_v1.base_query import FieldFilter

    query = _db().collection(ARTIFACTS).where(filter=FieldFilter("uid", "==", uid))
    out = []
    for snap in query.stream(**clients.opts()):  # see clients: a stream needs its retry to resume
        a = snap.to_dict()
        if a.get("deleted_at") or a.get("tombstone"):
            continue
        out.append(
            {
                "object": a["object"],
                "kind": a.get("kind"),
                "size": a.get("size"),
                "content_type": a.get("content_type"),
                "crc32c": a.get("crc32c"),
                "generation": a.get("generation"),
                "recorded_at": clock.rfc3339(a["created_at"]),
            }
        )
    return sorted(out, key=lambda f: f["object"])
