"""Reading what a service process logged: its JSON lines, other lines skipped."""

from __future__ import annotations

import json
from pathlib import Path


def log_lines(path: Path) -> list[dict]:
    lines = []
    for raw in path.read_text().splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            continue  # a traceback or a library's plain-text output
        if isinstance(line, dict):
            lines.append(line)
    return lines
