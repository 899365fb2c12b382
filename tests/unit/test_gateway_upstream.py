"""The local gateway's connections to the functions (mllab_dev.upstream): what a function receives and
what the browser gets back, kept-alive connections the function's server has closed, a request never
sent twice when the function may have acted on it, and a function that is down or silent.

Each function here is a scripted HTTP/1.1 server on a local port: for each request it is asked what to
do by the connection's and the request's number, and it records what it received."""

from __future__ import annotations

import gzip
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from werkzeug.test import Client, TestResponse

from mllab.api import routes
from mllab_dev import gateway as gateway_module
from mllab_dev import upstream

JSON_OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}"
CLOSE = None  # the script's answer: close the connection without answering


@dataclass
class Received:
    connection: int
    method: str
    target: str
    headers: list[tuple[str, bytes]]
    body: bytes

    def header(self, name: str) -> bytes | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


@dataclass
class ScriptedFunction:
    """A function's server: `script(connection number, request number on it)` is the raw answer to send,
    or CLOSE; after the answer the connection stays open unless `close_after` says otherwise."""

    script: Callable[[int, int], bytes | None]
    close_after: Callable[[int, int], bool] = lambda conn, n: False
    received: list[Received] = field(default_factory=list)
    connections: int = 0

    def __post_init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(sock, self.connections), daemon=True).start()

    def _serve(self, sock: socket.socket, conn: int) -> None:
        with sock, sock.makefile("rb") as fp:
            for n in range(1, 1000):
                request = fp.readline()
                if not request:
                    return
                method, target, _ = request.decode("latin-1").split(" ", 2)
                headers = []
                while (line := fp.readline()) not in (b"\r\n", b""):
                    name, _, value = line.partition(b":")
                    headers.append((name.decode("latin-1"), value.strip()))
                seen = Received(conn, method, target, headers, b"")
                seen.body = fp.read(int(seen.header("Content-Length") or 0))
                self.received.append(seen)
                answer = self.script(conn, n)
                if answer is CLOSE:
                    return
                sock.sendall(answer)
                if self.close_after(conn, n):
                    return

    def stop(self) -> None:
        self.listener.close()


@pytest.fixture
def make_gateway(tmp_path: Path) -> Iterator[Callable[..., tuple[Client, gateway_module.Gateway]]]:
    apps: list[gateway_module.Gateway] = []

    def make(function: ScriptedFunction | None, **upstreams: float) -> tuple[Client, gateway_module.Gateway]:
        port = function.port if function else _closed_port()
        app = gateway_module.Gateway(
            {"frontend": str(tmp_path), "functions": {fn.name: port for fn in routes.FUNCTIONS}, "components": []}
        )
        app.upstreams = upstream.Upstreams(**upstreams)
        apps.append(app)
        return Client(app, use_cookies=False), app

    yield make
    for app in apps:
        app.upstreams.close()


def _closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as s:
        return s.getsockname()[1]


def _assert_unavailable(r: TestResponse, detail: str) -> None:
    assert r.status_code == 503, r.data
    assert r.headers["Content-Type"] == "application/problem+json"
    assert int(r.headers["Retry-After"]) >= 1
    body = r.get_json()
    assert body["status"] == 503 and detail in body["detail"] and body["request_id"] == r.headers["X-Request-Id"]


# --- what passes through ----------------------------------------------------------------------------


def test_the_function_receives_the_request_as_the_load_balancer_forwards_it(make_gateway) -> None:
    fn = ScriptedFunction(lambda c, n: JSON_OK)
    client, _ = make_gateway(fn)
    r = client.post(
        "/projects?limit=%31&x=a b",
        data=b'{"name": "p"}',
        headers={
            "Content-Type": "application/json",
            "X-CSRF-Token": "jeton-\xe9",  # WSGI's latin-1 text for the byte 0xE9
            "X-Forwarded-For": "6.6.6.6",
            "Connection": "keep-alive",
            "Te": "trailers",
            "X-Request-Id": "given-request-id-0123456789",
        },
        environ_base={"REMOTE_ADDR": "10.1.2.3"},
    )
    assert r.status_code == 200 and r.get_json() == {"ok": True}
    [seen] = fn.received
    assert (seen.method, seen.target, seen.body) == ("POST", "/projects?limit=%31&x=a%20b", b'{"name": "p"}')
    assert seen.header("Host") == f"127.0.0.1:{fn.port}".encode()
    assert seen.header("Content-Length") == b"13"
    assert seen.header("X-CSRF-Token") == b"jeton-\xe9"  # the client's byte, as sent
    assert seen.header("X-Forwarded-For") == b"6.6.6.6, 10.1.2.3, 127.0.0.1"
    assert seen.header("X-Forwarded-Proto") == b"http"
    assert seen.header("X-Request-Id") == b"given-request-id-0123456789"
    trace = seen.header("X-Cloud-Trace-Context") or b""
    assert len(trace.split(b"/")[0]) == 32 and trace.endswith(b";o=1")
    assert seen.header("Connection") is None and seen.header("Te") is None


def test_an_empty_get_has_no_content_length_and_an_empty_post_says_zero(make_gateway) -> None:
    fn = ScriptedFunction(lambda c, n: JSON_OK)
    client, _ = make_gateway(fn)
    assert client.get("/me").status_code == 200
    assert client.post("/auth/logout").status_code == 200
    assert [s.header("Content-Length") for s in fn.received] == [None, b"0"]


def test_every_set_cookie_reaches_the_browser_and_the_functions_date_server_and_coding_do_not(make_gateway) -> None:
    body = gzip.compress(b'{"ok":true}')
    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nDate: Thu, 01 Jan 1970 00:00:00 GMT\r\n"
        b"Server: gunicorn\r\nContent-Encoding: gzip\r\nSet-Cookie: a=1; Path=/; HttpOnly\r\n"
        b"Set-Cookie: b=2; Path=/; Expires=Wed, 21 Oct 2026 07:28:00 GMT\r\nX-Name: \xa0caf\xe9\x85\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    client, _ = make_gateway(ScriptedFunction(lambda c, n: answer))
    r = client.get("/me")
    assert r.status_code == 200 and r.data == b'{"ok":true}'
    assert r.headers.getlist("Set-Cookie") == [
        "a=1; Path=/; HttpOnly",
        "b=2; Path=/; Expires=Wed, 21 Oct 2026 07:28:00 GMT",
    ]
    assert r.headers["X-Name"] == "\xa0caf\xe9\x85"  # latin-1 bytes (NBSP, NEL among them) as the function sent them
    assert "Date" not in r.headers and "Server" not in r.headers and "Content-Encoding" not in r.headers
    assert r.headers["Content-Length"] == "11"


def test_a_chunked_answer_after_an_interim_100_continue_is_read_whole(make_gateway) -> None:
    answer = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 201 CREATED\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\n{\"ok\"\r\n6;ext=1\r\n:true}\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    fn = ScriptedFunction(lambda c, n: answer)
    client, _ = make_gateway(fn)
    for _ in range(2):  # and the connection is reused after it
        r = client.post("/projects", data=b"{}", headers={"Content-Type": "application/json"})
        assert r.status_code == 201 and r.data == b'{"ok":true}' and "Transfer-Encoding" not in r.headers
    assert fn.connections == 1


def test_a_head_answer_has_no_body_and_the_connection_is_reused(make_gateway) -> None:
    fn = ScriptedFunction(
        lambda c, n: b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n"
    )
    client, _ = make_gateway(fn)
    assert client.head("/me").status_code == 200
    assert client.head("/me").status_code == 200
    assert fn.connections == 1 and len(fn.received) == 2


# --- kept-alive connections ---------------------------------------------------------------------------


def test_a_connection_the_functions_server_closed_while_idle_is_replaced(make_gateway) -> None:
    """functions-framework's gunicorn closes an idle connection after 2 s; the next request, even a POST
    (never sent twice), goes on a fresh connection and is answered, the function seeing it once."""
    fn = ScriptedFunction(lambda c, n: JSON_OK, close_after=lambda c, n: True)
    client, _ = make_gateway(fn, idle_expiry=60.0)
    for _ in range(3):
        assert client.post("/projects", data=b"{}", headers={"Content-Type": "application/json"}).status_code == 200
        time.sleep(0.1)  # the server's close has arrived
    assert fn.connections == 3 and [s.connection for s in fn.received] == [1, 2, 3]


def test_a_connection_idle_past_its_expiry_is_not_reused(make_gateway) -> None:
    fn = ScriptedFunction(lambda c, n: JSON_OK)
    client, _ = make_gateway(fn, idle_expiry=0.2)
    assert client.get("/me").status_code == 200
    assert client.get("/me").status_code == 200
    time.sleep(0.4)
    assert client.get("/me").status_code == 200
    assert [s.connection for s in fn.received] == [1, 1, 2]


def test_a_get_whose_reused_connection_closes_unanswered_is_sent_once_more_on_a_fresh_one(make_gateway) -> None:
    """The server closed the connection just as the request went out (it looked open): a GET changes
    nothing, so it is sent again, once, and answered."""
    fn = ScriptedFunction(lambda c, n: CLOSE if (c, n) == (1, 2) else JSON_OK)
    client, _ = make_gateway(fn, idle_expiry=60.0)
    assert client.get("/me").status_code == 200
    assert client.get("/me").status_code == 200
    assert [s.connection for s in fn.received] == [1, 1, 2]


def test_a_post_the_function_may_have_received_is_never_sent_twice(make_gateway) -> None:
    """The same close after a POST arrived: the function may have acted on it, so the browser gets a 503
    to retry as it sees fit, and the function saw the POST once."""
    fn = ScriptedFunction(lambda c, n: CLOSE if (c, n) == (1, 2) else JSON_OK)
    client, _ = make_gateway(fn, idle_expiry=60.0)
    assert client.get("/me").status_code == 200
    r = client.post("/projects", data=b'{"name": "once"}', headers={"Content-Type": "application/json"})
    _assert_unavailable(r, "is not running")
    assert [(s.method, s.connection) for s in fn.received] == [("GET", 1), ("POST", 1)]
    assert client.post("/projects", data=b"{}").status_code == 200  # the next one goes on a fresh connection


def test_a_get_on_a_fresh_connection_that_closes_unanswered_is_not_sent_again(make_gateway) -> None:
    fn = ScriptedFunction(lambda c, n: CLOSE)
    client, _ = make_gateway(fn)
    _assert_unavailable(client.get("/me"), "is not running")
    assert len(fn.received) == 1


# --- a function that is down or silent -----------------------------------------------------------------


def test_a_function_that_is_down_answers_503_problem(make_gateway) -> None:
    client, _ = make_gateway(None)  # nothing listens on its port
    _assert_unavailable(client.get("/me"), "account is not running")
    _assert_unavailable(client.post("/projects", data=b"{}"), "catalog is not running")


def test_a_function_missing_from_the_stack_answers_503_problem(make_gateway) -> None:
    client, app = make_gateway(ScriptedFunction(lambda c, n: JSON_OK))
    del app.functions["account"]
    _assert_unavailable(client.get("/me"), "account is not running in this local stack")


def test_a_function_that_does_not_answer_in_time_answers_503_problem(make_gateway) -> None:
    def slow(c: int, n: int) -> bytes:
        time.sleep(1.0)
        return JSON_OK

    client, _ = make_gateway(ScriptedFunction(slow), read_timeout=0.3)
    _assert_unavailable(client.get("/me"), "account did not answer in time")


def test_an_answer_that_is_not_http_answers_503_problem(make_gateway) -> None:
    client, _ = make_gateway(ScriptedFunction(lambda c, n: b"SSH-2.0-OpenSSH\r\n\r\n"))
    _assert_unavailable(client.get("/me"), "account is not running")


def test_a_dot_segment_is_refused_before_any_function_sees_it(make_gateway) -> None:
    fn = ScriptedFunction(lambda c, n: JSON_OK)
    client, _ = make_gateway(fn)
    for path in ("/projects/.", "/projects/..", "/projects/./versions"):
        assert client.get(path).status_code == 404, path
    assert fn.received == []


def test_a_body_over_the_cap_is_413_before_any_function_sees_it(make_gateway, monkeypatch) -> None:
    fn = ScriptedFunction(lambda c, n: JSON_OK)
    client, _ = make_gateway(fn)
    monkeypatch.setattr(gateway_module, "MAX_PROXY_BODY", 10)
    assert client.post("/projects", data=b"x" * 11).status_code == 413
    assert fn.received == []
