"""docs/own-data.md, run exactly as written, in a fresh folder outside the repository.

The page's ``python title="FILE"`` blocks are saved as FILE and its ``sh``
blocks run in order, each as one bash script with ``set -e``; ``text``
blocks are shown, not run. The only things the test adds are what a reader
has set up before: the environment's ``bin/`` on PATH (and the code under
test on PYTHONPATH), and free ports through the ``STREAMML_STACK_*_PORT``
variables, so it never takes the default ports another stack may hold.
Every step's time is printed (no timed assertions).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streamml.stack.ports import free_port, free_ports

pytestmark = [pytest.mark.integration, pytest.mark.timeout(2400)]
ROOT = Path(__file__).resolve().parents[3]
PAGE = ROOT / "docs" / "own-data.md"
BLOCK = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def steps(markdown: str) -> list[tuple[str, str, str | None]]:
    """(kind, text, file name) of each block the test acts on, in page order: files to write, scripts to run."""
    found = []
    for language, info, body in BLOCK.findall(markdown):
        title = re.search(r'title="([^"]+)"', info)
        if title:
            found.append(("file", body, title.group(1)))
        elif language == "sh":
            found.append(("run", body, None))
    return found


def test_the_page_lists_the_whole_walk_through():
    runs = " ".join(text for kind, text, _ in steps(PAGE.read_text()) if kind == "run")
    for command in ("streamml init", "streamml datasets validate", "streamml models validate",
                    "streamml policies validate", "streamml up", "streamml publish", "streamml models show",
                    "python app.py", "streamml drift report", "streamml down"):
        assert command in runs, f"docs/own-data.md no longer runs {command!r}"


def test_the_tutorial_runs_as_written_from_a_fresh_folder(tmp_path):
    folder = tmp_path / "cells"
    folder.mkdir()
    env = {name: value for name, value in os.environ.items() if not name.startswith("STREAMML_")}
    env.update({
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        "PYTHONPATH": str(ROOT),
        "STREAMML_STACK_KAFKA_PORT": str(free_port()),
        "STREAMML_STACK_S3_PORT": str(free_port()),
        "STREAMML_STACK_HTTP_BASE_PORT": str(free_ports(5)[0]),
    })
    outputs: list[tuple[str, str]] = []  # (script, what it printed)
    timeline: list[tuple[str, float]] = []
    started = time.monotonic()
    try:
        for kind, text, name in steps(PAGE.read_text()):
            if kind == "file":
                (folder / name).write_text(text)
                continue
            step = time.monotonic()
            done = subprocess.run(["bash", "-e", "-c", text], cwd=folder, env=env, capture_output=True, text=True,
                                  timeout=1200)
            outputs.append((text, done.stdout + done.stderr))
            commands = text.strip().splitlines()
            more = f" (+{len(commands) - 1} more)" if len(commands) > 1 else ""
            timeline.append((commands[0][:60] + more, time.monotonic() - step))
            assert done.returncode == 0, f"{text}\nexit {done.returncode}\n{done.stdout}\n{done.stderr}\n" + _logs(folder)
    finally:
        subprocess.run([sys.executable, "-m", "streamml.cli", "down"], cwd=folder, env=env, capture_output=True,
                       timeout=120)
        _print_timeline(timeline, time.monotonic() - started)
    printed = {script.strip(): output for script, output in outputs}
    text = "\n".join(printed.values())
    assert "event time: the Kafka timestamp" in text  # datasets validate: the table has no timestamp
    assert re.search(r"champion \S+ .*set by validator@", text), text[-4000:]
    served = re.search(r"(\d+) predictions by version (\S+);", text)
    assert served and int(served.group(1)) == 4 * 569
    assert "event time _kafka_time: each record's Kafka timestamp" in text  # datasets show: from the manifest
    drift = next(output for script, output in printed.items() if "drift report" in script)
    print(drift)
    # The app grew the mean and worst sizes by half and left the rest: the monitor tells them apart.
    assert "drift active: covariate" in drift and "drift events raised" in drift, drift
    verdicts = _feature_verdicts(drift)
    assert {verdicts[name] for name in ("mean_radius", "mean_perimeter", "worst_radius")} == {"high"}, verdicts
    assert {verdicts[name] for name in ("mean_texture", "radius_error", "worst_symmetry")} == {"-"}, verdicts


def _feature_verdicts(report: str) -> dict[str, str]:
    """Column -> the drift verdict of its first test, from the report's table rows (``│ name │ … │ high │``)."""
    verdicts = {}
    for line in report.splitlines():
        cells = [cell.strip() for cell in line.split("│")[1:-1]]
        if len(cells) > 3 and cells[0] and cells[0] not in verdicts:
            verdicts[cells[0]] = cells[-1]
    return verdicts


def _print_timeline(timeline: list[tuple[str, float]], total: float) -> None:
    load = os.getloadavg()
    print(f"\ndocs/own-data.md in {total:.0f}s (load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}):")
    for command, seconds in timeline:
        print(f"  {seconds:6.1f}s  {command}")


def _logs(folder: Path) -> str:
    logs = folder / ".streamml" / "logs"
    if not logs.is_dir():
        return ""
    return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-2500:]}" for log in sorted(logs.glob("*.log")))
