"""The static lab on lab.<domain>: its files, its /config.json and the headers the load balancer adds.

The deployed lab is frontend/ (with the vendored browser libraries in frontend/vendor/, which `make`
installs from npm) plus a generated /config.json naming the API. The bucket serves plain files, so
the security headers (the same ones the local gateway sends with the page) are custom response
headers on the backend bucket. The production CSP differs from the local one only in connect-src:
the API's origin and the storage origin that signed URLs point at (GCS's, or the S3-compatible
endpoint's: Environment.storage_origin). Never 'unsafe-eval'.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from deployment.environment import ROOT, Environment
from mllab.api import http

FRONTEND = ROOT / "frontend"
VENDOR_STAMP = FRONTEND / "vendor" / ".installed"
# npm's working files are not part of the site (the local gateway does not serve them either).
NOT_SERVED = {"node_modules", "package.json", "package-lock.json", "npm.log"}


def csp(env: Environment, *, embeddable: bool = False) -> str:
    return response_header_map(env, embeddable=embeddable)["Content-Security-Policy"]


def response_header_map(env: Environment, *, embeddable: bool = False) -> dict[str, str]:
    return http.lab_security_headers(f"{env.api_url} {env.storage_origin}", embeddable=embeddable)


def response_headers(env: Environment, *, embeddable: bool = False) -> list[str]:
    """`--custom-response-header` values for a backend bucket of the lab: the API's security headers
    with the lab's CSP, as the local gateway sends them with the page. A backend bucket's headers are
    the same for every file, so the share page (`embeddable`: any site may frame it) has a backend
    bucket of its own on the same bucket, which the URL map sends /m/* to (urlmap.py)."""
    return [f"{name}: {value}" for name, value in response_header_map(env, embeddable=embeddable).items()]


def config_json(env: Environment) -> str:
    # no health_url: only the local gateway has a /healthz (the deployed lab shows no status section)
    return json.dumps({"api_base": env.api_url, "env": "production"}) + "\n"


def vendored() -> bool:
    return VENDOR_STAMP.is_file()


def stage(env: Environment, frontend: Path = FRONTEND) -> Path:
    """Copy the site into the project's build folder with its production /config.json."""
    dest = env.files / "lab"
    shutil.rmtree(dest, ignore_errors=True)

    def skip(folder: str, names: list[str]) -> set[str]:
        return {n for n in names if n in NOT_SERVED or n.startswith(".") or n == "__pycache__"}

    shutil.copytree(frontend, dest, ignore=skip)
    (dest / "config.json").write_text(config_json(env))
    return dest
