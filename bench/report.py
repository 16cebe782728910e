"""What every benchmark ends with: its JSON line on stderr and, with ``--results``, in a file."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def source_revision() -> str:
    """The commit of the authsvc measured, and whether its working tree differs from it."""
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        return "not a git checkout"
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "--", "authsvc"], capture_output=True, text=True
    ).stdout.strip()
    return head.stdout.strip() + (" + uncommitted changes in authsvc/" if dirty else "")


def emit(report: dict[str, Any], name: str, results: Path | None) -> None:
    """Print ``report`` as one JSON line on stderr, with the revision measured (unless it has
    one) and the UTC time; write it to ``results/<name>-<UTC time>.json`` when a results folder
    is given."""
    report = {
        "revision": source_revision(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **report,
    }
    line = json.dumps(report)
    print(line, file=sys.stderr)
    if results:
        results.mkdir(parents=True, exist_ok=True)
        path = results / f"{name}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
        path.write_text(line + "\n")
        print(f"written {path}", file=sys.stderr)
