"""The repository explains itself: no comment, docstring or document points at notes that live outside
it (design drafts, research notes, the planning folder beside the checkout) or at issue numbers of a
tracker a reader cannot see. Cite the repo's own docs/ or give the reason inline."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SUFFIXES = {".py", ".js", ".html", ".css", ".md", ".yaml", ".yml", ".toml", ".json", ".sh", ""}
OUTSIDE = re.compile(r"\bDESIGN\b|(?i:research/[a-z]+\.md|research notes|\.\./shared\b|\bissue #?\d+\b)")


def tracked_text_files() -> list[Path]:
    names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    files = [ROOT / n for n in names]
    return [
        f
        for f in files
        if f.suffix in SUFFIXES and f.is_file() and "package-lock" not in f.name and f.stat().st_size < 2_000_000
    ]


def test_nothing_cites_notes_outside_the_repository() -> None:
    this = Path(__file__).resolve()
    hits = []
    for path in tracked_text_files():
        if path.resolve() == this:
            continue
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if OUTSIDE.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()[:100]}")
    assert hits == []
