"""Reading the repo's pins (constraints.txt, pyproject.toml, a function's requirements.txt) as the
functions' runtime sees them, for the unit and stack tests alike: a pin with an environment marker
counts only where it holds on Python 3.12, the deploy runtime (numpy has one pin per Python)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from packaging.markers import Marker
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = {"python_version": "3.12", "python_full_version": "3.12.1"}  # the functions' runtime
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9][A-Za-z0-9.+!_-]*)$")


def exact_pins(lines: Iterable[str]) -> dict[str, str]:
    """Distribution (canonical name) -> version of each pin the runtime installs; anything but an exact
    pin (`name==version`, optionally `; marker`, optionally `# why`) fails."""
    pins: dict[str, str] = {}
    for raw in lines:
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        line, _, marker = (part.strip() for part in line.partition(";"))
        if marker and not Marker(marker).evaluate(RUNTIME):
            continue  # a pin for another Python than the deploy runtime's
        m = PIN.fullmatch(line)
        assert m, f"not an exact pin: {raw!r}"
        pins[canonicalize_name(m.group(1))] = m.group(2)
    return pins


def lock() -> dict[str, str]:
    """constraints.txt, as the functions' runtime installs it."""
    return exact_pins((ROOT / "constraints.txt").read_text().splitlines())
