"""Which drift-build training window brings a stream's model back, without the running stack.

The recovery bench's own pieces, minus Kafka and the services: a stream's
rows as ingest lands them (a Parquet object with each row's Kafka time),
the drift build's preparation (prep's DuckDB engine: drift point, window,
recency weights), the trainer's loop on the bench's model spec, and the
accuracy (or RMSE) on fresh rows of the new world. Per window it prints the
metric of the retrained model and its change against a model trained and
scored on the old world, as the bench's "within 2%" target measures it.

    .venv/bin/python bench/recovery/windows.py                       # covariate_binary, the bench's counts
    .venv/bin/python bench/recovery/windows.py --stream concept_binary --seeds 3
    .venv/bin/python bench/recovery/windows.py --min-steps 0          # the model spec without min_steps
    .venv/bin/python bench/recovery/windows.py --early-rows 1100      # the drift point 1,100 rows early
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.recovery.streams import FEATURES, STREAMS, Stream, dataset_spec, model_spec  # noqa: E402
from services.prep.duckdb_job import prepare_with_duckdb  # noqa: E402
from services.prep.result import build_manifest  # noqa: E402
from services.trainer.data import (  # noqa: E402
    FeatureLayout,
    TabularTensors,
    read_parquet,
    row_weights,
    tensors_from_table,
)
from services.trainer.spec import parse_model_spec  # noqa: E402
from services.trainer.train import predict_scores, train  # noqa: E402
from streamml.sdk.preprocess import FeatureTransform  # noqa: E402
from streamml.specs import KAFKA_TIME, parse_dataset_spec  # noqa: E402

T0_MS = 1_765_000_000_000
ROW_MS = 5  # 200 rows a second, the bench's default rate


def landed(stream: Stream, rng: np.random.Generator, old_rows: int, new_rows: int) -> tuple[pa.Table, int]:
    """``old_rows`` of the old world then ``new_rows`` of the new, one every ROW_MS; and the drift point."""
    tables = []
    for first, count, drifted in ((0, old_rows, False), (old_rows, new_rows, True)):
        records, labels = stream.rows(rng, first, count, drifted)
        columns = {name: [record[name] for record in records] for name in ("row_id", *FEATURES)}
        ms = T0_MS + (first + np.arange(count)) * ROW_MS
        tables.append(pa.table({**columns, "y": labels,
                                KAFKA_TIME: pa.array(ms, pa.int64()).cast(pa.timestamp("ms", tz="UTC"))}))
    return pa.concat_tables(tables), T0_MS + old_rows * ROW_MS


def scored(stream: Stream, spec, manifest, folder: Path, fresh: tuple[list[dict], list]) -> tuple[float, int]:
    """The model trained on the prepared version in ``folder``, scored on ``fresh`` records and labels
    (transformed as the SDK does), and the train rows."""
    layout = FeatureLayout.from_manifest(manifest, stream.task)
    weighted = [manifest.weight] if manifest.weight else []
    tables = {split: read_parquet(sorted((folder / split).glob("*.parquet")), [*layout.columns, *weighted])
              for split in ("train", "validation")}
    layout = layout.with_classes(tables["train"])
    weights = row_weights(tables["train"], manifest.weight) if manifest.weight else None
    result = train(spec, layout, tensors_from_table(tables["train"], layout),
                   tensors_from_table(tables["validation"], layout), device="cpu", train_weights=weights)
    records, labels = fresh
    features = FeatureTransform.from_manifest(manifest).apply(records)
    numeric, categorical = features.tensors()
    truth = np.asarray(labels, dtype=np.float64)
    test = TabularTensors(numeric.float(), categorical, torch.from_numpy(truth))
    scores = predict_scores(result.net, test, torch.device("cpu"))
    if stream.task == "regression":
        return float(np.sqrt(np.mean((scores - truth) ** 2))), len(tables["train"])
    if stream.task == "multiclass":
        classes = np.asarray(layout.classes)
        return float(np.mean(classes[scores.argmax(axis=1)] == truth)), len(tables["train"])
    return float(np.mean((scores > 0) == (truth > 0.5))), len(tables["train"])


def run(stream: Stream, old_rows: int, new_rows: int, fresh_rows: int, seed: int, windows: list[dict],
        work: Path, min_steps: int | None, early_rows: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    dataset = parse_dataset_spec(yaml.safe_load(dataset_spec(stream, min_rows_after=new_rows)))
    document = yaml.safe_load(model_spec(stream))
    if min_steps is not None:  # 0: the spec without min_steps
        document["min_steps"] = min_steps or None
    model = parse_model_spec(document)
    raw, drift_ms = landed(stream, rng, old_rows, new_rows)
    # Where the drift event says the drift began: a label window that started before it puts old rows
    # in the since_drift window, as in the bench's runs.
    point_ms = drift_ms - early_rows * ROW_MS
    raw_path, old_path = work / f"{seed}-raw.parquet", work / f"{seed}-old.parquet"
    pq.write_table(raw, raw_path)
    pq.write_table(raw.slice(0, old_rows), old_path)
    fresh = {drifted: stream.rows(np.random.default_rng([seed, 99, drifted]), 10**9, fresh_rows, drifted)
             for drifted in (False, True)}
    results = {}
    for name, window in [(FIRST, None), *[(_name(w), w) for w in windows]]:
        out = work / f"{seed}-{len(results)}"
        if window is None:  # the first champion: the old world only, scored on it
            prepared = prepare_with_duckdb(dataset, [str(old_path)], str(out))
        else:
            since = point_ms if window["window"] == "since_drift" else None
            prepared = prepare_with_duckdb(dataset, [str(raw_path)], str(out), since_ms=since,
                                           drift_point_ms=point_ms, half_life_s=window.get("half_life_s"))
        manifest = build_manifest(prepared, dataset, version=1, lineage=[], trigger="bench", code_version="bench")
        started = time.perf_counter()
        results[name], train_rows = scored(stream, model, manifest, out, fresh[window is not None])
        print(f"  seed {seed} {name:<40} {stream.metric} {results[name]:.4f} "
              f"(train rows {train_rows}, {time.perf_counter() - started:.0f} s)", flush=True)
    return results


FIRST = "old world (the first champion)"


def _name(window: dict) -> str:
    if window["window"] == "since_drift":
        return "since_drift"
    return "all, unweighted" if window.get("half_life_s") is None else f"all, half_life_s {window['half_life_s']:g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stream", default="covariate_binary", choices=sorted(STREAMS))
    parser.add_argument("--old-rows", type=int, default=30_000, help="rows of the old world (the bench's first rows)")
    parser.add_argument("--new-rows", type=int, default=8_000, help="post-drift rows (the bench's min_rows_after)")
    parser.add_argument("--fresh-rows", type=int, default=20_000, help="rows each model is scored on")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--half-life-s", type=float, nargs="*", default=[20.0, 60.0])
    parser.add_argument("--min-steps", type=int, help="the model spec's min_steps instead of the bench's (0: unset)")
    parser.add_argument("--early-rows", type=int, default=0,
                        help="the drift event's point this many rows before the real drift (the bench's runs: 1,100)")
    args = parser.parse_args()
    stream = STREAMS[args.stream]
    windows = [{"window": "since_drift"}, {"window": "all"},
               *[{"window": "all", "half_life_s": h} for h in args.half_life_s]]
    torch.set_num_threads(1)
    print(f"{stream.name}: {args.old_rows} old rows, {args.new_rows} new rows at {1000 // ROW_MS} rows/s; "
          f"scored on {args.fresh_rows} fresh rows of the world each model serves")
    with tempfile.TemporaryDirectory(prefix="recovery-windows-") as folder:
        runs = [run(stream, args.old_rows, args.new_rows, args.fresh_rows, seed, windows, Path(folder),
                    args.min_steps, args.early_rows) for seed in range(args.seeds)]
    baseline = np.mean([r[FIRST] for r in runs])
    print(f"\n| training window | {stream.metric} (mean of {args.seeds}) | against the first champion |\n|---|---|---|")
    for name in runs[0]:
        value = np.mean([r[name] for r in runs])
        change = (value - baseline) / baseline * (1 if stream.metric != "rmse" else -1)
        print(f"| {name} | {value:.4f} | {change:+.1%} |")


if __name__ == "__main__":
    main()
