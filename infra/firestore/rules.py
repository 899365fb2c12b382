"""Release infra/firestore/firestore.rules as the project's Firestore security rules, if they changed.

gcloud has no command for Firestore rules, so this uses the documented Firebase Rules REST API
(firebaserules.googleapis.com): create a ruleset from the source, then point the `cloud.firestore`
release (the default database's) at it. It first compares the released source with the file, so
running it again changes nothing. The access token comes from `gcloud auth print-access-token` and
stays in memory (never in a command line, never printed). Standard library only.

    python3 infra/firestore/rules.py --project=PROJECT [--rules=infra/firestore/firestore.rules]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

API = "https://firebaserules.googleapis.com/v1"
RULES = Path(__file__).with_name("firestore.rules")
TIMEOUT_S = 30

# (method, url, body or None) -> (HTTP status, parsed JSON body)
Fetch = Callable[[str, str, "dict[str, Any] | None"], "tuple[int, dict[str, Any]]"]


def gcloud_token() -> str:
    done = subprocess.run(["gcloud", "auth", "print-access-token"], capture_output=True, text=True, check=False)
    if done.returncode != 0 or not done.stdout.strip():
        raise SystemExit("rules: `gcloud auth print-access-token` failed; run `gcloud auth login` first")
    return done.stdout.strip()


def http_fetch(project: str, token: str) -> Fetch:
    def fetch(method: str, url: str, body: dict[str, Any] | None) -> tuple[int, dict[str, Any]]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            url,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {token}",
                "x-goog-user-project": project,
                "Content-Type": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    return fetch


def _ok(status: int, body: dict[str, Any], what: str) -> dict[str, Any]:
    if status >= 300:
        message = body.get("error", {}).get("message", "") if isinstance(body.get("error"), dict) else ""
        raise SystemExit(f"rules: {what} answered {status} {message}".rstrip())
    return body


def release(project: str, source: str, fetch: Fetch) -> str:
    """Make `source` the released rules. Returns "unchanged", "created" or "updated"."""
    release_name = f"projects/{project}/releases/cloud.firestore"
    status, current = fetch("GET", f"{API}/{release_name}", None)
    if status == 200:
        ruleset = _ok(*fetch("GET", f"{API}/{current['rulesetName']}", None), "reading the released ruleset")
        files = ruleset.get("source", {}).get("files", [])
        if [f.get("content") for f in files] == [source]:
            return "unchanged"
    elif status != 404:
        _ok(status, current, "reading the release")
    created = _ok(
        *fetch(
            "POST",
            f"{API}/projects/{project}/rulesets",
            {"source": {"files": [{"name": "firestore.rules", "content": source}]}},
        ),
        "creating a ruleset",
    )
    target = {"name": release_name, "rulesetName": created["name"]}
    if status == 404:
        _ok(*fetch("POST", f"{API}/projects/{project}/releases", target), "creating the release")
        return "created"
    _ok(*fetch("PATCH", f"{API}/{release_name}", {"release": target}), "updating the release")
    return "updated"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", required=True)
    parser.add_argument("--rules", type=Path, default=RULES)
    args = parser.parse_args(argv)
    outcome = release(args.project, args.rules.read_text(), http_fetch(args.project, gcloud_token()))
    print(f"Firestore rules {outcome} ({args.rules.name})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
