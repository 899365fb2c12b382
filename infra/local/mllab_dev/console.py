"""What `make dev` prints: one short line per request and every error in full.

Every process's output goes, as it is, to `.dev/logs/<part>.log` (JSON lines from the functions and the
gateway); the console gets the gateway's request records shortened to

    14:03:07  GET    /models                    200    12 ms  catalog

and, from any part, a record at WARNING or above (with its stack trace), or a line that is not JSON
(a crash, a traceback, a tool's own error). Routine records (INFO and below) stay in the files.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

REQUEST = "request"  # the gateway's per-request record (gateway.py)
LOUD = {"WARNING", "ERROR", "CRITICAL", "ALERT", "EMERGENCY"}
# gunicorn's own start and stop lines: routine, and in the part's log file.
_GUNICORN_INFO = re.compile(r"^\[[^\]]+\] \[\d+\] \[INFO\] ")


def request_line(record: dict[str, Any], now: float | None = None) -> str:
    clock = time.strftime("%H:%M:%S", time.localtime(now))
    return (
        f"{clock}  {record.get('method', '?'):6} {record.get('path', '?'):32} {record.get('status', '?'):>3} "
        f"{record.get('latency_ms', 0):>6.0f} ms  {record.get('function') or '-'}"
    )


def shown(part: str, line: str, now: float | None = None) -> str | None:
    """The console's version of one output line of `part`, or None when it belongs in the file only."""
    text = line.rstrip("\n")
    if not text.strip():
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return None if _GUNICORN_INFO.match(text) else f"[{part}] {text}"
    if not isinstance(record, dict):
        return f"[{part}] {text}"
    if part == "gateway" and record.get("message") == REQUEST and "status" in record:
        return request_line(record, now)
    severity = str(record.get("severity", "INFO")).upper()
    if severity not in LOUD:
        return None
    trace = record.pop("stack_trace", "")
    full = f"[{part}] {severity} {record.get('message', '')}  {json.dumps(record, ensure_ascii=False)}"
    return full + (f"\n{trace.rstrip()}" if trace else "")
