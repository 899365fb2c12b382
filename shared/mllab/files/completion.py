"""Object events on a store without GCS notifications (MLLAB_STORAGE=s3): the completion route the lab
calls after its PUT, and the sweep that reports what no completion did (a tab closed mid-save).

Both read the object's metadata from the store and publish the event a GCS notification would
(mllab.files.notify) to the same topic, so the same recorder decides what the object means and every
check it makes applies unchanged. Neither records anything itself, and neither trusts the caller's
word: the completion names an object, and the store says what is there. Reporting an object twice is
harmless (the recorder takes each generation once).

How late the sweep can be: it runs every SWEEP_EVERY (Cloud Scheduler) and reports objects older
than SWEEP_MIN_AGE, so an object whose completion never came is recorded at most
SWEEP_EVERY + SWEEP_MIN_AGE (11 minutes) plus one sweep's run and the recorder's delivery after its
PUT. Until then it is not counted against the quota; the next upload's check cannot see it either.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from mllab.files import events, notify, objects, recorder, store
from mllab.files.store import ObjectInfo
from mllab.platform import clients, clock, config, log, wire
from mllab.platform.problems import Problem

SWEEP_EVERY = timedelta(minutes=10)
# A completion normally follows its PUT within a second: the sweep leaves young objects to it.
SWEEP_MIN_AGE = timedelta(minutes=1)
SWEEP_PREFIX = "users/"
_LOOKUP_BATCH = 100


def complete(uid: str, name: str) -> wire.Accepted:
    """Report the user's uploaded object to the recorder. On GCS the bucket's notification does."""
    parsed = objects.parse(name)
    not_found = Problem(404, "There is no uploaded file of yours by that name.")
    if parsed is None or parsed.uid != uid:
        raise not_found
    if not store.is_s3():
        return wire.Accepted(detail="The file is recorded when the bucket reports it.")
    from mllab.files import s3

    info = s3.stat(name)
    if info is None:
        raise not_found
    notify.publish(notify.FINALIZE, info)
    return wire.Accepted(detail="The file is being recorded.")


def sweep(min_age: timedelta = SWEEP_MIN_AGE) -> list[str]:
    """Publish a finalize event for every object under `users/` older than `min_age` that has no
    artifact record (recorded, refused or deleted). Returns the names it published."""
    from mllab.files import s3

    bucket = config.settings().bucket
    cutoff = clock.now() - min_age
    candidates = (info for info in s3.list_prefix(SWEEP_PREFIX) if info.updated <= cutoff)
    published: list[str] = []
    for batch in _batches(candidates, _LOOKUP_BATCH):
        known = _known_keys([events.object_key(bucket, info.name, info.generation) for info in batch])
        for info in batch:
            if events.object_key(bucket, info.name, info.generation) in known:
                continue
            full = s3.stat(info.name)  # LIST omits the content type the recorder checks
            if full is not None and full.generation == info.generation:
                notify.publish(notify.FINALIZE, full)
                published.append(info.name)
    log.info("upload sweep done", published=len(published))
    return published


def _known_keys(keys: list[str]) -> set[str]:
    """Which of these artifact documents exist."""
    db = clients.firestore()
    refs = [db.collection(recorder.ARTIFACTS).document(key) for key in keys]
    return {snap.id for snap in db.get_all(refs) if snap.exists}


def _batches(items: Iterable[ObjectInfo], size: int) -> Iterable[list[ObjectInfo]]:
    batch: list[ObjectInfo] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
