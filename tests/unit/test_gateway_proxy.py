"""The local gateway proxies like a load balancer: a function's cookies go to the browser that asked,
and the gateway itself keeps none to send on with anyone's next request."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client

from mllab.api import routes
from mllab_dev import gateway as gateway_module


class _Function(BaseHTTPRequestHandler):
    """A function that sets a cookie on every answer and says which Cookie header it received."""

    received: list[str | None] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's handler name
        _Function.received.append(self.headers.get("Cookie"))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Set-Cookie", "seen=alice-only; Path=/")  # not Secure: a jar would send it over http
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:  # quiet
        pass


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[Client]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Function)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Function.received = []
    ports = {fn.name: server.server_address[1] for fn in routes.FUNCTIONS}
    app = gateway_module.Gateway({"frontend": str(tmp_path), "functions": ports, "components": []})
    try:
        yield Client(app, use_cookies=False)  # each request is its own browser: only the headers it names
    finally:
        app.upstreams.close()
        server.shutdown()
        server.server_close()


def test_a_functions_cookie_reaches_its_browser_and_is_not_sent_with_the_next_request(proxied: Client) -> None:
    first = proxied.get("/me", headers={"Cookie": "mine=alice"})
    assert first.status_code == 200
    assert first.headers.getlist("Set-Cookie") == ["seen=alice-only; Path=/"]
    second = proxied.get("/me")  # another browser, with no cookie of its own
    assert second.status_code == 200
    assert _Function.received == ["mine=alice", None]
