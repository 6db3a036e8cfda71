"""Evidently's data drift preset on windows written by ``run.py``; prints one JSON line.

Runs in its own virtualenv (``.venv-evidently``) because Evidently pulls in
pandas, scikit-learn, a web server and more that streamml does not need::

    python -m venv .venv-evidently && .venv-evidently/bin/pip install 'evidently==0.7.23' 'pandas<3'
    .venv-evidently/bin/python bench/monitor/evidently_drift.py FOLDER

FOLDER holds ``reference.parquet`` (the reference sample, as many rows as
the monitor's), ``meta.json`` (numeric and category column names) and one
folder per stream of ``window-<index>.parquet`` files. The preset runs with
its defaults (Evidently picks each column's test); per window the output
gives the number of drifted columns, the preset's dataset-drift verdict
(at least half the columns drifted) and the CPU seconds taken.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("DO_NOT_TRACK", "1")

import pandas as pd  # noqa: E402
from evidently import DataDefinition, Dataset, Report  # noqa: E402
from evidently.presets import DataDriftPreset  # noqa: E402


def main(folder: Path) -> None:
    meta = json.loads((folder / "meta.json").read_text())
    definition = DataDefinition(numerical_columns=meta["numeric"], categorical_columns=meta["category"])
    reference = Dataset.from_pandas(pd.read_parquet(folder / "reference.parquet"), data_definition=definition)
    results: dict[str, dict[str, dict]] = {}
    warmed = False
    for stream in sorted(path for path in folder.iterdir() if path.is_dir()):
        results[stream.name] = {}
        for path in sorted(stream.glob("window-*.parquet")):
            frame = pd.read_parquet(path)
            if not warmed:  # one untimed run, so imports and caches do not count
                Report([DataDriftPreset()]).run(
                    current_data=Dataset.from_pandas(frame, data_definition=definition), reference_data=reference
                )
                warmed = True
            started = time.process_time()
            current = Dataset.from_pandas(frame, data_definition=definition)
            snapshot = Report([DataDriftPreset()]).run(current_data=current, reference_data=reference)
            drifted = snapshot.dict()["metrics"][0]["value"]
            results[stream.name][path.stem.removeprefix("window-")] = {
                "drifted_columns": int(drifted["count"]),
                "dataset_drift": bool(drifted["share"] >= 0.5),
                "cpu_s": time.process_time() - started,
            }
    print(json.dumps(results))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
