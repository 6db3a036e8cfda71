"""Monitor throughput: predictions per second per core through windows and drift tests,
and Evidently's data drift report on the same windows for comparison.

    .venv/bin/python bench/monitor/run.py                       # 2M predictions, window 50k
    .venv/bin/python bench/monitor/run.py --predictions 500000 --evidently-windows 0

Single-threaded numpy (thread pools pinned to 1), so one process is one
core. Evidently runs in ``.venv-evidently`` (see ``evidently_drift.py``).
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_name] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from services.monitor import drift  # noqa: E402
from services.monitor.monitor import ModelMonitor  # noqa: E402
from services.monitor.stats.page_hinkley import PageHinkley  # noqa: E402
from services.monitor.synthetic import (  # noqa: E402
    CATEGORY,
    NUMERIC,
    feedback_batch,
    prediction_batch,
    traffic,
    training_reference,
)
from services.monitor.windows import WindowSpec  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
EVIDENTLY_PYTHON = ROOT / ".venv-evidently" / "bin" / "python"


def timed_evaluate():
    """Wrap evaluate_window to add up the time spent in the tests themselves."""
    spent = []
    original = drift.evaluate_window

    def evaluate(*args, **kwargs):
        started = time.process_time()
        report = original(*args, **kwargs)
        spent.append(time.process_time() - started)
        return report

    return evaluate, spent, original


def run_monitor(batches, reference, baseline, spec, with_feedback: bool) -> dict:
    import services.monitor.monitor as monitor_module

    evaluate, spent, original = timed_evaluate()
    monitor_module.evaluate_window = evaluate
    try:
        monitor = ModelMonitor(reference, windows=spec, baseline=baseline if with_feedback else None)
        events = []
        wall, cpu = time.perf_counter(), time.process_time()
        previous = None
        for data, first, times in batches:
            events += monitor.add_predictions(prediction_batch(data, first, times))
            if with_feedback and previous is not None:
                events += monitor.add_feedback(feedback_batch(previous[0], previous[1], times))
            previous = (data, first)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        monitor_module.evaluate_window = original
    rows = sum(data.outputs.size for data, _, _ in batches)
    return {
        "predictions": rows,
        "wall_s": wall,
        "cpu_s": cpu,
        "per_s_per_core": rows / cpu,
        "windows": len(spent),
        "tests_s_per_window": float(np.mean(spent)),
        "window_s": cpu / max(len(spent), 1),
        "events": len(events),
        "label_windows": len(monitor.performance_reports),
    }


def page_hinkley_false_alarms(errors_total: int, seed: int) -> dict:
    """Alarms on a stream without change, at the default threshold and at a low one that theory can be checked at."""
    rng = np.random.default_rng(seed)
    detectors = {8.0: PageHinkley(threshold=8.0), 20.0: PageHinkley(threshold=20.0)}
    alarms = dict.fromkeys(detectors, 0)
    started = time.perf_counter()
    for _ in range(errors_total // 1_000_000):
        data = traffic(rng, 1_000_000)
        errors = (data.outputs - data.labels) ** 2
        for threshold, detector in detectors.items():
            alarms[threshold] += len(detector.update(errors))
    blocks = errors_total // 100
    # Siegmund's approximation of the mean run between false alarms (normal block means).
    k = 0.5
    expected = {h: blocks / ((np.exp(2 * k * (h + 1.166)) - 2 * k * (h + 1.166) - 1) / (2 * k * k)) for h in detectors}
    return {
        "errors": errors_total,
        "blocks": blocks,
        "alarms": alarms,
        "expected_alarms": expected,
        "seconds": time.perf_counter() - started,
    }


def evidently_times(batches, train, spec: WindowSpec, windows: int) -> dict | None:
    if windows == 0:
        return None
    if not EVIDENTLY_PYTHON.exists():
        print(
            f"skipping Evidently: {EVIDENTLY_PYTHON} not found (python -m venv .venv-evidently && "
            ".venv-evidently/bin/pip install evidently 'pandas<3')"
        )
        return None
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        columns = [*NUMERIC, *CATEGORY]
        pq.write_table(pa.table({name: train.features[name] for name in columns}), folder / "reference.parquet")
        merged = {name: np.concatenate([data.features[name] for data, _, _ in batches]) for name in columns}
        for index in range(windows):
            part = slice(index * spec.size, (index + 1) * spec.size)
            pq.write_table(
                pa.table({name: merged[name][part] for name in columns}), folder / f"window-{index:03d}.parquet"
            )
        (folder / "meta.json").write_text(json.dumps({"numeric": list(NUMERIC), "category": list(CATEGORY)}))
        done = subprocess.run(
            [str(EVIDENTLY_PYTHON), str(Path(__file__).with_name("evidently_drift.py")), str(folder)],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "DO_NOT_TRACK": "1"},
        )
    if done.returncode != 0:
        print(done.stderr[-3000:])
        raise SystemExit(f"Evidently run failed with exit code {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--predictions", type=int, default=2_000_000)
    parser.add_argument("--window", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=10_000, help="predictions per consumed batch")
    parser.add_argument("--evidently-windows", type=int, default=3, help="windows given to Evidently (0: skip)")
    parser.add_argument("--page-hinkley-errors", type=int, default=20_000_000, help="0: skip the false-alarm run")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    reference, baseline = training_reference(seed=1)
    train = traffic(np.random.default_rng(1), 200_000)  # the rows Evidently gets as its reference
    rng = np.random.default_rng(args.seed)
    batches = []
    for first in range(0, args.predictions, args.batch):
        n = min(args.batch, args.predictions - first)
        batches.append((traffic(rng, n), first, 1.7e9 + np.arange(first, first + n) / 1000.0))
    spec = WindowSpec(size=args.window, label_size=args.window // 2)
    features = len(reference.features)
    print(
        f"{args.predictions:,} predictions, {features} features ({len(NUMERIC)} numeric, {len(CATEGORY)} category) "
        f"+ the prediction column, window {args.window:,}, batches of {args.batch:,}"
    )

    alone = run_monitor(batches, reference, baseline, spec, with_feedback=False)
    print(
        f"windows + tests:             {alone['per_s_per_core']:>12,.0f} predictions/s per core "
        f"({alone['cpu_s']:.2f} s CPU, {alone['windows']} windows, {alone['events']} events)"
    )
    print(
        f"  per window: {alone['window_s'] * 1000:.1f} ms in all, "
        f"of which tests {alone['tests_s_per_window'] * 1000:.1f} ms"
    )
    joined = run_monitor(batches, reference, baseline, spec, with_feedback=True)
    print(
        f"+ feedback join, errors, PH: {joined['per_s_per_core']:>12,.0f} predictions/s per core "
        f"(each with its label; {joined['label_windows']} label windows, {joined['events']} events)"
    )

    if args.page_hinkley_errors:
        ph = page_hinkley_false_alarms(args.page_hinkley_errors, args.seed + 1)
        print(
            f"Page-Hinkley on {ph['errors']:,} errors without change ({ph['blocks']:,} blocks): "
            + ", ".join(
                f"threshold {h:g}: {ph['alarms'][h]} alarms (theory {ph['expected_alarms'][h]:.2g})"
                for h in ph["alarms"]
            )
        )

    evidently = evidently_times(batches, train, spec, args.evidently_windows)
    if evidently:
        ours = alone["window_s"]
        for name, result in evidently.items():
            mean = float(np.mean(result["cpu_s"]))
            print(
                f"Evidently DataDriftPreset [{name}] on {len(result['cpu_s'])} windows of {args.window:,} "
                f"(reference 200,000 rows): {mean:.2f} s CPU per window = {mean / ours:,.0f}x streamml's "
                f"{ours * 1000:.1f} ms; drifted columns {result['drifted_columns']}"
            )


if __name__ == "__main__":
    main()
