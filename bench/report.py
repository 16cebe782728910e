"""What every benchmark ends with: its JSON line on stderr and, with ``--results``, in a file."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any


def emit(report: dict[str, Any], name: str, results: Path | None) -> None:
    """Print ``report`` as one JSON line on stderr; write it to ``results/<name>-<UTC time>.json``
    when a results folder is given."""
    line = json.dumps(report)
    print(line, file=sys.stderr)
    if results:
        results.mkdir(parents=True, exist_ok=True)
        path = results / f"{name}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
        path.write_text(line + "\n")
        print(f"written {path}", file=sys.stderr)
