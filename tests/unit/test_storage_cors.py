"""The bucket's CORS rules. fake-gcs-server answers CORS with `*` whatever the bucket says, so the rules
are checked here: the file `infra/` applies in production, and the rules `make dev` applies."""

from __future__ import annotations

import json
import string
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from mllab.files import storage
from mllab.platform import config
from tests.unit.helpers import REPO

CORS_FILE = REPO / "infra" / "storage-cors.json"
MODEL = f"users/{'a' * 32}/projects/{'b' * 32}/models/{'c' * 32}/versions/1/model.json"


def _signed_headers(url: str) -> set[str]:
    return set(dict(parse_qsl(urlsplit(url).query))["X-Goog-SignedHeaders"].split(";"))


def test_the_infra_file_is_generated_from_the_code() -> None:
    assert CORS_FILE.read_text() == storage.cors_file(storage.CORS_FILE_ORIGIN)
    assert json.loads(CORS_FILE.read_text()) == storage.bucket_cors("https://lab.${DOMAIN}")


def test_the_infra_file_allows_only_the_lab_origin() -> None:
    rules = json.loads(CORS_FILE.read_text())
    assert isinstance(rules, list) and len(rules) == 1  # the list form `--cors-file` takes
    assert [rule["origin"] for rule in rules] == [["https://lab.${DOMAIN}"]]
    assert "*" not in CORS_FILE.read_text()
    assert set(rules[0]) == {"origin", "method", "responseHeader", "maxAgeSeconds"}
    assert rules[0]["maxAgeSeconds"] == 3600


def test_the_deploy_substitution_gives_an_https_lab_origin() -> None:
    text = string.Template(CORS_FILE.read_text()).substitute(DOMAIN="example.com")
    assert json.loads(text) == storage.bucket_cors("https://lab.example.com")
    # The only placeholder is DOMAIN (envsubst would leave nothing else to guess).
    assert {
        m.group("braced") for m in string.Template.pattern.finditer(CORS_FILE.read_text()) if m.group("braced")
    } == {"DOMAIN"}


def test_methods_are_exactly_the_signed_urls_methods() -> None:
    (rule,) = storage.bucket_cors("https://lab.example.com")
    assert rule["method"] == ["PUT", "GET", "HEAD"]
    assert storage.signed_upload_url(MODEL, "application/json", 1).method in rule["method"]
    assert storage.signed_download_url(MODEL).method in rule["method"]


def test_headers_are_exactly_the_headers_the_signed_urls_pin() -> None:
    (rule,) = storage.bucket_cors("https://lab.example.com")
    permitted = {h.lower() for h in rule["responseHeader"]}
    upload = storage.signed_upload_url(MODEL, "text/csv", 10)
    # Host is set by the browser itself; every other signed header must pass the preflight.
    assert permitted == _signed_headers(upload.url) - {"host"}
    assert permitted == {h.lower() for h in upload.headers}
    download = storage.signed_download_url(MODEL)
    assert _signed_headers(download.url) - {"host"} <= permitted and download.headers == {}


def test_rules_follow_the_lab_url_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert storage.bucket_cors()[0]["origin"] == ["http://127.0.0.1:8080"]
    monkeypatch.setenv("MLLAB_LAB_URL", "http://localhost:9000/lab/?x=1")
    config.reload()
    assert storage.bucket_cors()[0]["origin"] == ["http://localhost:9000"]


def test_production_rules_use_the_https_lab_origin(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {
        "MLLAB_ENV": "production",
        "MLLAB_PROJECT": "mllab-prod",
        "MLLAB_PUBLIC_URL": "https://api.example.com",
        "MLLAB_CORS_ORIGINS": "https://lab.example.com",
        "MLLAB_LAB_URL": "https://lab.example.com/",
        "MLLAB_OIDC_ISSUER": "https://accounts.google.com",
    }.items():
        monkeypatch.setenv(key, value)
    config.reload()
    assert storage.bucket_cors() == storage.bucket_cors("https://lab.example.com")
    assert json.loads(storage.cors_file(storage.lab_origin())) == storage.bucket_cors()


@pytest.mark.parametrize(
    "origin",
    [
        "*",
        "https://*.example.com",
        "https://lab.example.com/",
        "https://lab.example.com/app",
        "null",
        "lab.example.com",
        "ftp://lab.example.com",
        "",
    ],
)
def test_wildcards_paths_and_non_origins_are_refused(origin: str) -> None:
    with pytest.raises(ValueError):
        storage.bucket_cors(origin)


def test_the_command_line_writes_the_infra_file() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mllab.files.storage", "cors", "--origin", "https://lab.${DOMAIN}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == CORS_FILE.read_text()
    refused = subprocess.run(
        [sys.executable, "-m", "mllab.files.storage", "cors", "--origin", "*"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2 and refused.stdout == ""


# --- applying the rules (make dev) through the JSON API ---------------------------------------------


@pytest.fixture
def json_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """A GCS JSON API stand-in that records requests and answers a bucket resource."""
    seen: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_PATCH(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
            seen.append({"method": self.command, "path": urlsplit(self.path).path, "body": body})
            data = json.dumps({"kind": "storage#bucket", "name": "mllab-local", **body}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{server.server_address[1]}")
    yield seen
    server.shutdown()
    server.server_close()


def test_apply_bucket_cors_patches_the_bucket_with_the_rules(json_api: list[dict[str, Any]]) -> None:
    rules = storage.apply_bucket_cors()
    assert rules == storage.bucket_cors()
    (request,) = json_api
    assert request["method"] == "PATCH"
    assert request["path"] == "/storage/v1/b/mllab-local"
    assert request["body"] == {"cors": rules}
