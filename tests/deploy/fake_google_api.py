"""A stand-in for every Google API gcloud talks to during a deploy: it answers 404 to reads and 403 to
writes, and records each request (method, path with query, headers, body).

gcloud is pointed at it with CLOUDSDK_API_ENDPOINT_OVERRIDES_<API>=http://127.0.0.1:PORT/<tag>/<api>/:
the tag (one per command, so commands can run at once) and the API's name tell the requests apart.
Nothing exists and nothing may be created, so a command gets as far as its first write: far enough to
see what it would send. A few reads do answer, so that `gcloud functions deploy` reaches its create
request (a project's number, its APIs enabled, the runtimes list, and the upload URL, whose PUT is
accepted): that request's body (ingress, secrets, trigger) is what the test checks.
"""

from __future__ import annotations

import http.server
import json
import threading
from dataclasses import dataclass, field
from typing import Any

# Every API a deploy command can reach, as gcloud's endpoint override names them.
APIS = (
    "artifactregistry",
    "billingbudgets",
    "cloudbilling",
    "cloudbuild",
    "cloudfunctions",
    "cloudresourcemanager",
    "cloudscheduler",
    "compute",
    "eventarc",
    "firestore",
    "iam",
    "iamcredentials",
    "logging",
    "monitoring",
    "pubsub",
    "run",
    "secretmanager",
    "serviceusage",
    "storage",
    "cloudasset",
)


PROJECT_NUMBER = "123456789012"  # any project's number, as the fake answers a project lookup


@dataclass(frozen=True)
class Request:
    tag: str
    api: str
    method: str
    path: str  # after /<api>, with the query
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def text(self) -> str:
        return " ".join([self.path, *self.headers.values(), self.body.decode(errors="replace")])


@dataclass
class FakeGoogleApi:
    requests: list[Request] = field(default_factory=list)
    _server: http.server.ThreadingHTTPServer | None = None

    @property
    def base(self) -> str:
        assert self._server
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def overrides(self, tag: str) -> dict[str, str]:
        """The environment that sends one command's requests here, marked with `tag`."""
        return {f"CLOUDSDK_API_ENDPOINT_OVERRIDES_{api.upper()}": f"{self.base}/{tag}/{api}/" for api in APIS}

    def of(self, tag: str) -> list[Request]:
        return [r for r in list(self.requests) if r.tag == tag]

    def start(self) -> FakeGoogleApi:
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                tag, _, rest = self.path.lstrip("/").partition("/")
                api, _, rest = rest.partition("/")
                fake.requests.append(Request(tag, api, self.command, "/" + rest, dict(self.headers.items()), body))
                status, answer = fake.respond(tag, api, self.command, "/" + rest)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    def respond(self, tag: str, api: str, method: str, path: str) -> tuple[int, dict[str, Any]]:
        bare = path.split("?")[0]
        if api == "cloudfunctions" and method == "GET" and bare.endswith("/runtimes"):
            return 200, {"runtimes": [{"name": "python312", "stage": "GA", "environment": "GEN_2"}]}
        if api == "cloudfunctions" and method == "POST" and bare.endswith("/functions:generateUploadUrl"):
            return 200, {
                "uploadUrl": f"{self.base}/{tag}/upload/source.zip",
                "storageSource": {"bucket": "gcf-v2-uploads", "object": "source.zip"},
            }
        if api == "cloudresourcemanager" and method == "GET" and bare.startswith("/v1/projects/"):
            project = bare.split("/")[3]
            return 200, {"projectId": project, "projectNumber": PROJECT_NUMBER, "lifecycleState": "ACTIVE"}
        if api == "serviceusage" and method == "GET" and "/services/" in bare:
            return 200, {"name": bare.split("/v1/")[-1], "state": "ENABLED"}
        if api == "upload" and method == "PUT":
            return 200, {}
        if method == "GET":
            return 404, {"error": {"code": 404, "message": "not found (fake Google API)", "status": "NOT_FOUND"}}
        return 403, {"error": {"code": 403, "message": "denied (fake Google API)", "status": "PERMISSION_DENIED"}}
