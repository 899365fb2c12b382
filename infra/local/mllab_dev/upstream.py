"""The local gateway's connections to the functions: the stdlib's HTTP/1.1 client, kept alive.

httpx's client (request and header models, its pool, h11) was three quarters of the gateway's CPU per
proxied request (tests/bench/gateway_bench.py); http.client does the same exchange for a quarter of it.
A client of our own that wrote bytes and read the answer line by line saved about 0.15 ms a request
more, and was set aside: parsing HTTP (chunked bodies, interim answers, what a malformed answer is) is
the stdlib's job, and this stand-in's figure is not what production pays.

Idle connections are pooled per function port. One idle for more than IDLE_EXPIRY_S, or one its server
has closed, is not reused: functions-framework's gunicorn closes idle connections after 2 s. If the
server closes a reused connection anyway (as the request is sent), the request is sent once more on a
fresh connection, but only when the function cannot have acted on it: the send itself failed, or, for a
safe method, the connection closed before any byte of an answer. A POST the function may have received
is never sent twice.
"""

from __future__ import annotations

import http.client
import select
import threading
import time
import zlib
from collections.abc import Iterable
from typing import NamedTuple

CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 60.0
IDLE_EXPIRY_S = 1.0  # well before the functions' gunicorn closes an idle connection (keepalive 2 s)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Answer(NamedTuple):
    status: int
    headers: list[tuple[str, str]]  # as received (values decoded as latin-1), Content-Encoding undone
    body: bytes


class UpstreamProtocolError(http.client.HTTPException):
    """The function's answer could not be read (e.g. a body its Content-Encoding does not decode)."""


class _NotSent(Exception):
    """The function cannot have acted on the request: it may be sent again on a fresh connection."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


class _Connection(http.client.HTTPConnection):
    def __init__(self, port: int, connect_timeout: float, read_timeout: float) -> None:
        super().__init__("127.0.0.1", port, timeout=connect_timeout)
        self.read_timeout = read_timeout
        self.idle_since = 0.0

    def connect(self) -> None:
        super().connect()  # bounded by the connect timeout; sets TCP_NODELAY
        self.sock.settimeout(self.read_timeout)

    def dropped(self) -> bool:
        """True when the server has closed this idle connection (or sent something unasked)."""
        if self.sock is None:
            return True
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        return bool(poller.poll(0))


class Upstreams:
    """HTTP/1.1 requests to 127.0.0.1:<port>, over pooled keep-alive connections; safe across threads."""

    def __init__(
        self,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        read_timeout: float = READ_TIMEOUT_S,
        idle_expiry: float = IDLE_EXPIRY_S,
    ) -> None:
        self.connect_timeout, self.read_timeout, self.idle_expiry = connect_timeout, read_timeout, idle_expiry
        self._idle: dict[int, list[_Connection]] = {}
        self._lock = threading.Lock()

    def request(self, port: int, method: str, target: str, headers: Iterable[tuple[str, str]], body: bytes) -> Answer:
        """Send one request (header values as latin-1 text, passed on as those bytes) and read its answer.
        Raises TimeoutError, OSError or http.client.HTTPException when the function does not answer."""
        lines = [("Host", f"127.0.0.1:{port}"), *headers]
        # Content-Length as httpx sent it: the body's length, and 0 for an empty POST, PUT or PATCH only.
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(("Content-Length", str(len(body))))
        conn, reused = self._take(port)
        try:
            return self._exchange(port, conn, method, target, lines, body)
        except _NotSent as unsent:
            if not reused:
                raise unsent.error from None
        # The server had closed the reused connection: once more, on a fresh one.
        try:
            return self._exchange(port, self._new(port), method, target, lines, body)
        except _NotSent as unsent:
            raise unsent.error from None

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()

    def _exchange(
        self, port: int, conn: _Connection, method: str, target: str, lines: list[tuple[str, str]], body: bytes
    ) -> Answer:
        try:
            try:
                conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
                for name, value in lines:
                    conn.putheader(name, value)
                conn.endheaders(body)
            except ConnectionError as exc:  # not a timeout: nothing of the request reached the function
                raise _NotSent(exc) from None
            try:
                resp = conn.getresponse()
            except ConnectionError as exc:  # closed (or reset) before the answer's first byte
                if method in SAFE_METHODS:
                    raise _NotSent(exc) from None
                raise
            content = resp.read()
        except BaseException:
            conn.close()
            raise
        if resp.will_close:
            conn.close()
        else:
            self._put(port, conn)
        return _decoded(resp.status, resp.getheaders(), content)

    def _new(self, port: int) -> _Connection:
        return _Connection(port, self.connect_timeout, self.read_timeout)

    def _take(self, port: int) -> tuple[_Connection, bool]:
        """The most recently used idle connection that is still open, else a new one; (conn, reused)."""
        now = time.monotonic()
        stale: list[_Connection] = []
        found = None
        with self._lock:
            idle = self._idle.get(port)
            while idle:
                conn = idle.pop()
                if now - conn.idle_since > self.idle_expiry:
                    stale.append(conn)  # and every older one
                    stale.extend(idle)
                    idle.clear()
                elif conn.dropped():
                    stale.append(conn)
                else:
                    found = conn
                    break
        for conn in stale:
            conn.close()
        return (found, True) if found else (self._new(port), False)

    def _put(self, port: int, conn: _Connection) -> None:
        conn.idle_since = time.monotonic()
        with self._lock:
            self._idle.setdefault(port, []).append(conn)


def _decoded(status: int, headers: list[tuple[str, str]], body: bytes) -> Answer:
    """Undo a Content-Encoding the function applied (as httpx did; the gateway drops that header)."""
    coding = next((v.strip().lower() for k, v in headers if k.lower() == "content-encoding"), "")
    try:
        if coding in ("gzip", "x-gzip"):
            body = zlib.decompress(body, zlib.MAX_WBITS | 16)
        elif coding == "deflate":
            try:
                body = zlib.decompress(body)
            except zlib.error:
                body = zlib.decompress(body, -zlib.MAX_WBITS)
        elif coding == "br":
            import brotli  # only for a function that answers in brotli: none does today

            body = brotli.decompress(body)
    except Exception as exc:  # noqa: BLE001 - any codec's failure is an unreadable answer
        raise UpstreamProtocolError(f"the body does not decode as {coding}: {exc}") from None
    return Answer(status, headers, body)
