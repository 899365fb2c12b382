"""The local gateway's HTTP/1.1 client to the functions: a request written as bytes, its answer read
line by line, over pooled keep-alive connections.

httpx's client (request and header models, its pool, h11) was three quarters of the gateway's CPU per
proxied request, and the stdlib's http.client still spent half of what was left validating each header
and parsing the answer with the email package (tests/bench/gateway_bench.py). The functions' server is
functions-framework's gunicorn, and every request comes through the gateway's own gunicorn, which has
already refused a malformed one; so this client writes the request as it stands and reads what HTTP/1.1
allows an answer to be: 1xx interim answers, a Content-Length, chunked or close-delimited body, no body
for HEAD, 204 and 304.

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
import socket
import threading
import time
import zlib
from collections.abc import Iterable
from typing import BinaryIO, NamedTuple

CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 60.0
IDLE_EXPIRY_S = 1.0  # well before the functions' gunicorn closes an idle connection (keepalive 2 s)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LINE_MAX = 65536  # as http.client: a longer status or header line is not an answer
HEADERS_MAX = 100
OWS = " \t\r"  # the whitespace around a header value, and a line's CR


class Answer(NamedTuple):
    status: int
    headers: list[tuple[str, str]]  # as received, values decoded as latin-1 (so bytes pass through)
    body: bytes  # its Content-Encoding, if any, undone


class UpstreamProtocolError(http.client.HTTPException):
    """The function's answer is not HTTP/1.1 this client can read (nor one gunicorn sends)."""


class _NotSent(Exception):
    """The function cannot have acted on the request: it may be sent again on a fresh connection."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


class _Connection:
    def __init__(self, port: int, connect_timeout: float, read_timeout: float) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=connect_timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(read_timeout)
        self.fp: BinaryIO = self.sock.makefile("rb")
        self.idle_since = 0.0

    def dropped(self) -> bool:
        """True when the server has closed this idle connection (or sent something unasked)."""
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        return bool(poller.poll(0))

    def close(self) -> None:
        self.fp.close()
        self.sock.close()


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
        """Send one request and read its answer. `target` is the encoded path and query; header values are
        latin-1 text (as WSGI hands them over), sent as those bytes. Raises TimeoutError, another OSError
        or http.client.HTTPException when the function does not answer."""
        lines = [f"{method} {target} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
        lines.extend(f"{name}: {value}" for name, value in headers)
        # Content-Length as httpx sent it: the body's length, and 0 for an empty POST, PUT or PATCH only.
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body)}")
        text = "\r\n".join(lines) + "\r\n\r\n"
        if text.count("\n") != len(lines) + 1 or text.count("\r") != len(lines) + 1:
            raise ValueError("a request line or header holds a line break")  # never one gunicorn passed on
        head = text.encode("latin-1")
        request = head + body if len(body) < 65536 else None  # one send for a small request, no copy of a large
        conn, reused = self._take(port)
        try:
            return self._exchange(port, conn, method, request or head, None if request else body)
        except _NotSent as unsent:
            if not reused:
                raise unsent.error from None
        # The server had closed the reused connection: once more, on a fresh one.
        try:
            return self._exchange(port, self._new(port), method, request or head, None if request else body)
        except _NotSent as unsent:
            raise unsent.error from None

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()

    def _exchange(self, port: int, conn: _Connection, method: str, head: bytes, body: bytes | None) -> Answer:
        safe = method in SAFE_METHODS
        try:
            try:
                conn.sock.sendall(head)
                if body is not None:
                    conn.sock.sendall(body)
            except ConnectionError as exc:  # not a timeout: the function has not had the whole request
                raise _NotSent(exc) from None
            try:
                first = conn.fp.readline(LINE_MAX + 1)
            except ConnectionError as exc:  # reset before the answer's first byte
                raise _NotSent(exc) if safe else exc from None
            if not first:
                closed = http.client.RemoteDisconnected("the function closed the connection without answering")
                raise _NotSent(closed) if safe else closed
            status, headers, content, keep = _read_answer(conn.fp, first, method)
        except BaseException:
            conn.close()
            raise
        if keep:
            self._put(port, conn)
        else:
            conn.close()
        return _decoded(status, headers, content)

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


def _line(fp: BinaryIO) -> bytes:
    line = fp.readline(LINE_MAX + 1)
    if len(line) > LINE_MAX:
        raise UpstreamProtocolError("an answer line is too long")
    if not line:
        raise http.client.IncompleteRead(b"")
    return line


def _read_answer(fp: BinaryIO, first: bytes, method: str) -> tuple[int, list[tuple[str, str]], bytes, bool]:
    """(status, headers, body, whether the connection stays open) of the answer whose status line is
    `first`; interim 1xx answers (100 Continue to a client's Expect) are skipped."""
    version, status, headers = _read_head(fp, first)
    while 100 <= status < 200 and status != 101:
        version, status, headers = _read_head(fp, _line(fp))
    fields = {name.lower(): value for name, value in headers}  # the last of a repeated one, enough here
    tokens = {t.strip().lower() for t in fields.get("connection", "").split(",")}
    keep = "close" not in tokens and (version == b"HTTP/1.1" or "keep-alive" in tokens)
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return status, headers, b"", keep
    if "chunked" in fields.get("transfer-encoding", "").lower():
        return status, headers, _chunked(fp), keep
    length = fields.get("content-length")
    if length is None:
        return status, headers, fp.read(), False  # the body ends where the connection does
    if not length.isdigit():
        raise UpstreamProtocolError(f"an answer's Content-Length is {length!r}")
    body = fp.read(int(length))
    if len(body) < int(length):
        raise http.client.IncompleteRead(body, int(length) - len(body))
    return status, headers, body, keep


def _read_head(fp: BinaryIO, first: bytes) -> tuple[bytes, int, list[tuple[str, str]]]:
    version, status = _status(first)
    lines = []
    while (line := _line(fp)) not in (b"\r\n", b"\n"):
        lines.append(line)
    if len(lines) > HEADERS_MAX:
        raise UpstreamProtocolError("an answer has too many header lines")
    headers: list[tuple[str, str]] = []
    # One decode for the whole head. Only "\n" ends a line and only HTTP's own whitespace is stripped:
    # a latin-1 value may hold bytes that str.splitlines and str.strip would take for line ends or spaces.
    for text in b"".join(lines).decode("latin-1").split("\n")[:-1]:
        if text[:1] in (" ", "\t") and headers:  # an obsolete folded line continues the last value
            headers[-1] = (headers[-1][0], f"{headers[-1][1]} {text.strip(OWS)}")
            continue
        name, colon, value = text.partition(":")
        if not colon:
            raise UpstreamProtocolError(f"an answer's header line is malformed: {text[:80]!r}")
        headers.append((name, value.strip(OWS)))
    return version, status, headers


def _status(line: bytes) -> tuple[bytes, int]:
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not (parts[1].isdigit() and len(parts[1]) == 3):
        raise UpstreamProtocolError(f"not an HTTP/1.x status line: {line[:80]!r}")
    return parts[0], int(parts[1])


def _chunked(fp: BinaryIO) -> bytes:
    parts = []
    while True:
        size_text = _line(fp).split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise UpstreamProtocolError(f"a chunk's size is {size_text[:20]!r}") from None
        if size == 0:
            break
        chunk = fp.read(size)
        if len(chunk) < size or _line(fp).strip():
            raise UpstreamProtocolError("a chunk is cut short or not followed by its line end")
        parts.append(chunk)
    while _line(fp) not in (b"\r\n", b"\n"):  # trailer fields: nothing the gateway passes on
        pass
    return b"".join(parts)


def _decoded(status: int, headers: list[tuple[str, str]], body: bytes) -> Answer:
    """Undo a Content-Encoding the function applied (as httpx did; the gateway drops that header)."""
    coding = next((v.strip().lower() for k, v in headers if k.lower() == "content-encoding"), "")
    if coding in ("", "identity"):
        return Answer(status, headers, body)
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
