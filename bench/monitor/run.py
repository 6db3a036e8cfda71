"""Drift detection benchmark: how soon the monitor raises, how often it is wrong, and how fast it runs.

    .venv/bin/python bench/monitor/run.py                                   # 10 streams of 1M rows
    .venv/bin/python bench/monitor/run.py --rows 200000 --evidently-windows 0   # a quick look

A logistic model is fitted on 200,000 training rows (``model.py``) and
evaluated by the validator's code on 50,000 test rows (its AUC with DeLong's
standard error, as ``decision.json`` records it); its champion (card with the
training rows' feature statistics, decision) is read by the monitor's own
``champion_from``. Each stream of ``streams.py`` then goes, in polls of
10,000 predictions and their 10,000 labels (the default ``poll_batch`` of
20,000 records), through what the service runs per poll: the JSON bodies an
SDK logs are decoded (``records.py``) and fed to a ``ModelWatch`` with the
service's default settings. Rows per second per core count the CPU time of
decoding and monitoring only (generating the rows, the model's predictions
and the JSON encoding are not counted).

The same rows go to the baselines (``baselines.py``): KS / chi-square with
Bonferroni per 10,000-row window, and River's ADWIN on the errors. Evidently's
data drift preset (``evidently_drift.py``, in ``.venv-evidently``) gets the
same windows and a reference sample of as many rows as the monitor's
(2,000); its reports cost about a second each, so it judges
``--evidently-windows`` windows per stream (around the drift row; the first
ones of a stream without drift).

Per stream and detector it prints the detection delay (rows from the drift
row to the row whose processing raised the first alarm), false alarms
(alarms before the drift row, or anywhere in a stream without drift) and
alarms after the drift row (the monitor should raise exactly one event per
drift), then the targets of the monitor and whether this run met them.
Threads of numpy's BLAS are pinned to one.
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_name] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import msgspec  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from bench.monitor.baselines import AdwinOnErrors, WindowTests  # noqa: E402
from bench.monitor.model import LogisticModel  # noqa: E402
from bench.monitor.streams import CATEGORY, NUMERIC, Stream, streams, training_rows  # noqa: E402
from services.monitor.champion import Champion, champion_from  # noqa: E402
from services.monitor.config import MonitorOptions  # noqa: E402
from services.monitor.performance import PerformanceBaseline  # noqa: E402
from services.monitor.records import decode_feedback, decode_predictions  # noqa: E402
from services.monitor.reference import MonitorReference, category_reference, numeric_reference  # noqa: E402
from services.monitor.synthetic_registry import synthetic_card  # noqa: E402
from services.monitor.watch import ModelWatch  # noqa: E402
from services.validator.evaluation import evaluate  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
EVIDENTLY_PYTHON = ROOT / ".venv-evidently" / "bin" / "python"
MODEL = "fraud"
POLL_ROWS = 10_000  # predictions per poll, each followed by its label: 20,000 records
START_US = 1_700_000_000_000_000  # event time of row 0, microseconds since the epoch
ROW_US = 10_000  # one prediction every 10 ms
DETECTORS = ("streamml", "ks+chi2", "adwin", "evidently")
ENCODER = msgspec.json.Encoder()


@dataclass
class Outcome:
    """One detector on one stream."""

    alarms: list[int] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    cpu_s: float = 0.0
    rows: int = 0
    judged_from: int = 0  # first row it judged (Evidently judges some windows only)
    judged_rows: int = 0

    def summary(self, stream: Stream) -> dict:
        drift = stream.drift_row
        before = [row for row in self.alarms if drift is None or row < drift]
        after = [row for row in self.alarms if drift is not None and row >= drift]
        first = self.alarms.index(after[0]) if after else None
        return {
            "delay": after[0] - drift if after else None,
            "kind": self.kinds[first] if first is not None and self.kinds else None,
            "false_alarms": len(before),
            "after_drift": len(after),
            "rows_per_s": self.rows / self.cpu_s if self.cpu_s else None,
            "judged_rows": self.judged_rows,
            "clean_rows": self.judged_rows if drift is None else min(self.judged_rows, max(0, drift - self.judged_from)),
        }


def champion(model: LogisticModel, train: tuple, test: tuple) -> Champion:
    """The model as the monitor finds it in the registry: a card with training statistics, a decision."""
    features, _ = train
    reference = MonitorReference(
        model=MODEL,
        dataset="transactions",
        dataset_version=1,
        features={
            **{name: numeric_reference(features[name], seed=1) for name in NUMERIC},
            **{name: category_reference(features[name]) for name in CATEGORY},
        },
    )
    evaluation = evaluate("binary", model.predict(test[0]), test[1])
    card = synthetic_card(reference, "v1", PerformanceBaseline(task="binary", metric="auc", value=0.0))
    return champion_from(MODEL, "v1", card, {"candidate": evaluation.model_dump(mode="json")})


def bodies(features: dict, outputs: np.ndarray, labels: np.ndarray, index: np.ndarray) -> tuple[list, list]:
    """The JSON bodies an SDK logs: one prediction and one feedback record per row."""
    times = np.datetime_as_string((START_US + index * ROW_US).astype("datetime64[us]"), unit="us", timezone="UTC")
    ids = [f"r{row}" for row in index.tolist()]
    names = [*NUMERIC, *CATEGORY]
    columns = [features[name].tolist() for name in names]
    predictions = [
        ENCODER.encode({"request_id": request_id, "model": MODEL, "model_version": "v1",
                        "features": dict(zip(names, values, strict=True)), "output": output, "time": moment})
        for request_id, values, output, moment in zip(ids, zip(*columns, strict=True), outputs.tolist(),
                                                      times.tolist(), strict=True)
    ]
    feedback = [
        ENCODER.encode({"request_id": request_id, "model": MODEL, "label": int(label), "time": moment})
        for request_id, label, moment in zip(ids, labels.tolist(), times.tolist(), strict=True)
    ]
    return predictions, feedback


def row_of(moment) -> int:
    return round((moment.timestamp() * 1e6 - START_US) / ROW_US)


def evidently_windows(stream: Stream, count: int) -> set[int]:
    if count == 0:
        return set()
    if stream.drift_row is None:
        return set(range(count))
    first = stream.drift_row // POLL_ROWS - count // 4
    return set(range(max(first, 0), first + count))


def run_stream(
    stream: Stream, model: LogisticModel, winner: Champion, evidently: int, folder: Path
) -> dict[str, Outcome]:
    rng = np.random.default_rng(stream.seed)
    watch = ModelWatch(winner, MonitorOptions(models=[MODEL]))
    tests, adwin = WindowTests(winner.reference, POLL_ROWS), AdwinOnErrors()
    outcomes = {name: Outcome() for name in DETECTORS}
    chosen = evidently_windows(stream, evidently)
    for number, first in enumerate(range(0, stream.length, POLL_ROWS)):
        index = np.arange(first, min(first + POLL_ROWS, stream.length))
        features, labels = stream.rows(rng, index)
        outputs = model.predict(features)
        predictions, feedback = bodies(features, outputs, labels, index)

        started = time.process_time()
        events, _ = watch.add_predictions(decode_predictions(predictions, watch.layout, MODEL))
        events += watch.add_feedback(decode_feedback(feedback, MODEL, watch.task, watch.classes))
        outcomes["streamml"].cpu_s += time.process_time() - started
        outcomes["streamml"].alarms += [row_of(event.window.end) for event in events]
        outcomes["streamml"].kinds += [event.kind for event in events]

        started = time.process_time()
        outcomes["ks+chi2"].alarms += tests.add(features)
        outcomes["ks+chi2"].cpu_s += time.process_time() - started
        started = time.process_time()
        outcomes["adwin"].alarms += adwin.add((outputs - labels) ** 2)
        outcomes["adwin"].cpu_s += time.process_time() - started

        if number in chosen:
            window = folder / stream.name / f"window-{number:04d}.parquet"
            window.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.table({name: features[name] for name in (*NUMERIC, *CATEGORY)}), window)
    for name in ("streamml", "ks+chi2", "adwin"):
        outcomes[name].rows = outcomes[name].judged_rows = stream.length
    if chosen:
        outcomes["evidently"].judged_from = min(chosen) * POLL_ROWS
        outcomes["evidently"].judged_rows = len(chosen) * POLL_ROWS
    return outcomes


def run_evidently(folder: Path, train: tuple, sample_rows: int, results: dict[str, dict[str, Outcome]]) -> None:
    if not EVIDENTLY_PYTHON.exists():
        print(f"skipping Evidently: {EVIDENTLY_PYTHON} not found (python -m venv .venv-evidently && "
              ".venv-evidently/bin/pip install 'evidently==0.7.23' 'pandas<3')", file=sys.stderr)
        return
    features, _ = train
    rows = np.random.default_rng(2).choice(len(features["channel"]), sample_rows, replace=False)
    pq.write_table(pa.table({name: features[name][rows] for name in (*NUMERIC, *CATEGORY)}),
                   folder / "reference.parquet")
    (folder / "meta.json").write_text(json.dumps({"numeric": list(NUMERIC), "category": list(CATEGORY)}))
    done = subprocess.run([str(EVIDENTLY_PYTHON), str(Path(__file__).with_name("evidently_drift.py")), str(folder)],
                          capture_output=True, text=True, check=False, env={**os.environ, "DO_NOT_TRACK": "1"})
    if done.returncode != 0:
        print(done.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"Evidently run failed with exit code {done.returncode}")
    for stream, windows in json.loads(done.stdout.strip().splitlines()[-1]).items():
        outcome = results[stream]["evidently"]
        for index, window in sorted(windows.items()):
            outcome.cpu_s += window["cpu_s"]
            outcome.rows += POLL_ROWS
            if window["drifted_columns"] > 0:
                outcome.alarms.append((int(index) + 1) * POLL_ROWS - 1)
                outcome.kinds.append("dataset" if window["dataset_drift"] else "column")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows per stream")
    parser.add_argument("--drift-row", type=int, default=402_500)
    parser.add_argument("--evidently-windows", type=int, default=16, help="windows per stream for Evidently (0: skip)")
    parser.add_argument("--only", nargs="*", help="names of the streams to run (default: all)")
    args = parser.parse_args()

    train, test = training_rows(200_000, seed=1), training_rows(50_000, seed=2)
    model = LogisticModel.fit(*train)
    winner = champion(model, train, test)
    baseline = winner.baseline
    print(f"model: logistic regression, test AUC {baseline.value:.4f} ± {baseline.standard_error:.4f} (DeLong) "
          f"on 50,000 rows; reference: 200,000 training rows (numeric: deciles and a "
          f"{len(winner.reference.features['age'].sample):,}-row sample)", flush=True)
    chosen = [stream for stream in streams(args.rows, args.drift_row) if not args.only or stream.name in args.only]
    results: dict[str, dict[str, Outcome]] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        for stream in chosen:
            results[stream.name] = run_stream(stream, model, winner, args.evidently_windows, folder)
            summary = results[stream.name]["streamml"].summary(stream)
            print(f"  {stream.name}: {summary} ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
        if args.evidently_windows:
            run_evidently(folder, train, len(winner.reference.features["age"].sample), results)
    report(chosen, results, args)


def report(chosen: list[Stream], results: dict[str, dict[str, Outcome]], args: argparse.Namespace) -> None:
    summaries = {stream.name: {name: results[stream.name][name].summary(stream) for name in DETECTORS}
                 for stream in chosen}
    print(f"\n{len(chosen)} streams of {args.rows:,} rows; drift row {args.drift_row:,}; windows of {POLL_ROWS:,}; "
          "cells: delay in rows (first alarm's kind) / false alarms / alarms after the drift row\n")
    print("| stream | streamml | KS+χ² Bonferroni | ADWIN on errors | Evidently preset* |")
    print("|---|---|---|---|---|")
    for stream in chosen:
        cells = [_cell(stream, summaries[stream.name][name]) for name in DETECTORS]
        print(f"| {stream.name} | " + " | ".join(cells) + " |")
    print("\n| rows/s per core | " + " | ".join(
        _rate(results, chosen, name) for name in DETECTORS) + " |")
    judged = sum(summaries[s.name]["evidently"]["judged_rows"] for s in chosen)
    print(f"\n*Evidently judged {judged:,} rows ({args.evidently_windows} windows per stream), reference sample "
          "of 2,000 rows like the monitor's; an alarm is a window with at least one drifted column "
          "(kind 'dataset' when the preset's dataset drift, half the columns, was also flagged). "
          "KS+χ², ADWIN and Evidently take arrays: their rows/s leave JSON decoding out; streamml's include it.")
    targets(chosen, summaries, results)


def _cell(stream: Stream, summary: dict) -> str:
    if summary["judged_rows"] == 0:
        return "-"
    if stream.drift_row is None:
        delay = "-"
    elif summary["delay"] is None:
        delay = "missed"
    else:
        delay = f"{summary['delay']:,}" + (f" ({summary['kind']})" if summary["kind"] else "")
    return f"{delay} / {summary['false_alarms']} / {summary['after_drift']}"


def _rate(results: dict, chosen: list[Stream], name: str) -> str:
    rows = sum(results[s.name][name].rows for s in chosen)
    cpu = sum(results[s.name][name].cpu_s for s in chosen)
    return f"{rows / cpu:,.0f}" if cpu else "-"


def targets(chosen: list[Stream], summaries: dict, results: dict) -> None:
    ours = {stream.name: summaries[stream.name]["streamml"] for stream in chosen}
    drifting = [stream for stream in chosen if stream.drift_row is not None]
    concept = [s for s in drifting if s.name == "concept-abrupt"]
    strong = [s for s in drifting if s.kind == "covariate-strong"]
    clean_rows = sum(summary["clean_rows"] for summary in ours.values())
    false_alarms = sum(summary["false_alarms"] for summary in ours.values())
    rate = sum(results[s.name]["streamml"].rows for s in chosen) / sum(results[s.name]["streamml"].cpu_s for s in chosen)

    def first_full_window_end(stream: Stream) -> int:
        return (-(-stream.drift_row // POLL_ROWS) + 1) * POLL_ROWS - 1 - stream.drift_row

    rows = [
        ("abrupt concept drift raised within 1,000 labelled rows after the drift row",
         ", ".join(f"{ours[s.name]['delay']}" for s in concept),
         bool(concept) and all(ours[s.name]["delay"] is not None and ours[s.name]["delay"] <= 1_000 for s in concept)),
        ("a strong covariate shift within one window (raised by the first window of drifted rows only)",
         ", ".join(f"{ours[s.name]['delay']} (limit {first_full_window_end(s):,})" for s in strong),
         bool(strong) and all(ours[s.name]["delay"] is not None and ours[s.name]["delay"] <= first_full_window_end(s)
                              for s in strong)),
        ("every drift stream caught, with exactly one event per drift",
         f"{sum(ours[s.name]['after_drift'] == 1 for s in drifting)} of {len(drifting)} with one event",
         all(ours[s.name]["after_drift"] == 1 for s in drifting)),
        ("0 false alarms over at least 3M no-drift rows",
         f"{false_alarms} over {clean_rows:,} rows", false_alarms == 0 and clean_rows >= 3_000_000),
        ("at least 100k predictions-with-labels/s per core, decoding included", f"{rate:,.0f}", rate >= 100_000),
    ]
    print("\n| target | measured | met |\n|---|---|---|")
    for text, measured, met in rows:
        print(f"| {text} | {measured} | {'yes' if met else 'no'} |")


if __name__ == "__main__":
    main()
