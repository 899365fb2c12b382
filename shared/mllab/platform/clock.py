"""The one source of time. Tests move it in-process with `travel()`; production has no switch."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

_lock = threading.Lock()
_offset = timedelta(0)
_frozen: datetime | None = None


def now() -> datetime:
    """Current time, timezone-aware UTC."""
    if _frozen is not None:
        return _frozen
    return datetime.now(UTC) + _offset


def timestamp() -> int:
    """Whole seconds since the epoch (JWT NumericDate)."""
    return int(now().timestamp())


def rfc3339(dt: datetime | None = None) -> str:
    return (dt or now()).astimezone(UTC).isoformat().replace("+00:00", "Z")


@contextlib.contextmanager
def travel(*, to: datetime | None = None, by: timedelta | None = None, freeze: bool = False) -> Iterator[None]:
    """Move time for the duration of a block: to a moment, or by a delta; optionally frozen there."""
    global _offset, _frozen
    with _lock:
        saved = (_offset, _frozen)
        target = to if to is not None else now() + (by or timedelta(0))
        if target.tzinfo is None:
            raise ValueError("travel() needs an aware datetime")
        if freeze:
            _frozen = target
        else:
            _frozen = None
            _offset = target - datetime.now(UTC)
    try:
        yield
    finally:
        with _lock:
            _offset, _frozen = saved
