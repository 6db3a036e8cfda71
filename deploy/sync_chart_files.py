"""Copy the files the Helm chart shares with the rest of the repository into it.

    python deploy/sync_chart_files.py           # copy
    python deploy/sync_chart_files.py --check   # exit 1 when a copy is stale

Helm reads only files inside the chart folder, so topics.yaml, the consumer
groups, the alert rules and the Grafana dashboards live in the repository
once and are copied into charts/streamml/. The unit tests run the check.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "streamml"
DASHBOARD_SOURCES = ("dashboards", "deploy/grafana/dashboards")


def expected_copies(repo: Path = REPO) -> dict[Path, Path]:
    """Chart file -> the repository file it must equal."""
    chart = repo / "charts" / "streamml"
    copies = {
        chart / "files" / "topics.yaml": repo / "topics.yaml",
        chart / "files" / "consumers.yaml": repo / "deploy" / "consumers.yaml",
        chart / "files" / "alerts.yaml": repo / "deploy" / "prometheus" / "alerts.yaml",
    }
    for folder in DASHBOARD_SOURCES:
        for source in sorted((repo / folder).glob("*.json")):
            target = chart / "dashboards" / source.name
            if target in copies:
                raise ValueError(f"dashboard {source.name} exists in two folders: {copies[target]} and {source}")
            copies[target] = source
    return copies


def problems(repo: Path = REPO) -> list[str]:
    """What differs between the chart and its sources, one line each."""
    copies = expected_copies(repo)
    found = []
    for target, source in copies.items():
        if not target.is_file():
            found.append(f"{target.relative_to(repo)} is missing (copy of {source.relative_to(repo)})")
        elif target.read_bytes() != source.read_bytes():
            found.append(f"{target.relative_to(repo)} differs from {source.relative_to(repo)}")
    for stale in sorted((repo / "charts" / "streamml" / "dashboards").glob("*.json")):
        if stale not in copies:
            found.append(f"{stale.relative_to(repo)} has no source in {' or '.join(DASHBOARD_SOURCES)}")
    return found


def sync(repo: Path = REPO) -> None:
    copies = expected_copies(repo)
    for stale in (repo / "charts" / "streamml" / "dashboards").glob("*.json"):
        if stale not in copies:
            stale.unlink()
    for target, source in copies.items():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        found = problems()
        for line in found:
            print(f"{line}: run python deploy/sync_chart_files.py", file=sys.stderr)
        return 1 if found else 0
    if argv:
        print(__doc__, file=sys.stderr)
        return 2
    sync()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
