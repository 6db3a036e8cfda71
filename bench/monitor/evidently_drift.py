"""Times Evidently's data drift report on windows written by ``run.py``; prints JSON.

Runs in its own virtualenv (``.venv-evidently``) because Evidently pulls in
pandas, scikit-learn, a web server and more that streamml does not need::

    .venv-evidently/bin/python bench/monitor/evidently_drift.py FOLDER
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

CONFIGS = {
    "default": {},  # Evidently picks the tests: Wasserstein / Jensen-Shannon on large data
    "psi+chi2": {"num_method": "psi", "cat_method": "chisquare"},
    "ks+chi2": {"num_method": "ks", "cat_method": "chisquare"},
}


def main(folder: Path) -> None:
    meta = json.loads((folder / "meta.json").read_text())
    definition = DataDefinition(numerical_columns=meta["numeric"], categorical_columns=meta["category"])
    reference = Dataset.from_pandas(pd.read_parquet(folder / "reference.parquet"), data_definition=definition)
    windows = [pd.read_parquet(path) for path in sorted(folder.glob("window-*.parquet"))]
    results = {}
    for name, options in CONFIGS.items():
        # One untimed run so imports and caches do not count.
        Report([DataDriftPreset(**options)]).run(
            current_data=Dataset.from_pandas(windows[0], data_definition=definition), reference_data=reference
        )
        cpu, wall, drifted = [], [], []
        for frame in windows:
            started, started_cpu = time.perf_counter(), time.process_time()
            current = Dataset.from_pandas(frame, data_definition=definition)
            snapshot = Report([DataDriftPreset(**options)]).run(current_data=current, reference_data=reference)
            cpu.append(time.process_time() - started_cpu)
            wall.append(time.perf_counter() - started)
            drifted.append(snapshot.dict()["metrics"][0]["value"]["count"])
        results[name] = {"cpu_s": cpu, "wall_s": wall, "drifted_columns": drifted}
    print(json.dumps(results))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
