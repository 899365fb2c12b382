"""`make bench`, the lab's Lighthouse scores: Lighthouse 12.2.3 (tools/lighthouse, pinned by its lock file)
audits the first screen of the running stack's lab in Debian's Chromium (CHROME_PATH; it downloads no
browser), with its default mobile emulation and simulated throttling. Printed: the accessibility,
best-practices and performance scores (targets 95, 95 and 90) with the metrics behind performance, and
any failing audit. Numbers only; nothing here passes or fails."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

from mllab_dev.browser import CHROMIUM_ARGS, executable
from mllab_dev.stack import ROOT

LIGHTHOUSE = ROOT / "tools" / "lighthouse" / "node_modules" / ".bin" / "lighthouse"
CATEGORIES = ("accessibility", "best-practices", "performance")
TARGETS = {"accessibility": 95, "best-practices": 95, "performance": 90}
METRICS = (
    "first-contentful-paint",
    "largest-contentful-paint",
    "total-blocking-time",
    "cumulative-layout-shift",
    "speed-index",
)
TIMEOUT_S = 240


def run(url: str) -> dict:
    """One Lighthouse run of `url`: its JSON report."""
    flags = " ".join(a for a in CHROMIUM_ARGS if a.startswith(("--headless", "--no-sandbox", "--disable-quic")))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.json"
        subprocess.run(
            [
                str(LIGHTHOUSE),
                url,
                "--quiet",
                f"--chrome-flags={flags}",
                f"--only-categories={','.join(CATEGORIES)}",
                "--output=json",
                f"--output-path={out}",
            ],
            env={**os.environ, "CHROME_PATH": executable()},
            check=True,
            timeout=TIMEOUT_S,
            capture_output=True,
        )
        return json.loads(out.read_text())


def failing(report: dict) -> list[str]:
    """The audits of the scored categories that did not pass, with what they found."""
    ids = {ref["id"] for c in CATEGORIES for ref in report["categories"][c]["auditRefs"] if ref.get("weight")}
    return [
        f"{a['id']} ({a['score']:.2f}) {a.get('displayValue', '')}".rstrip()
        for a in report["audits"].values()
        if a["id"] in ids and a.get("score") is not None and a["score"] < 1
    ]


def lighthouse_section(url: str) -> None:
    if not LIGHTHOUSE.exists():
        print("\nLighthouse: not installed (make bench installs tools/lighthouse)")
        return
    try:
        report = run(url + "/")
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        print(f"\nLighthouse: failed ({exc}); {detail.decode(errors='replace')[-300:]}")
        return
    print(f"\n{'Lighthouse ' + report['lighthouseVersion'] + ', first screen':32} {'score':>6} {'target':>7}")
    for c in CATEGORIES:
        score = round(100 * (report["categories"][c]["score"] or 0))
        print(f"{c:32} {score:6d} {TARGETS[c]:7d}")
    print("  " + ", ".join(f"{m.replace('-', ' ')} {report['audits'][m]['displayValue']}" for m in METRICS))
    for line in failing(report):
        print(f"  not passed: {line}")
