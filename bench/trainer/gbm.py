"""The lightgbm flavour's training time against LightGBM called directly on the same data.

Synthetic prepared data (default: 200,000 train rows, 6 numeric + 2
categorical features, binary label) is written to Parquet and read back as
one Arrow table per split. Then, alternating over a few rounds, in this process:

- streamml: the trainer's path for a ``flavour: lightgbm`` spec: the
  trainer's column reader (``tensors_from_table``) and ``train_lightgbm``,
  which boosts with a validation set, keeps the best round's trees and
  computes the card's validation metrics;
- direct: numpy arrays from the same tables, ``lightgbm.train`` with the same
  parameters and validation set, and one ``predict`` on the validation split.

Both boost the same fixed number of rounds (no early stopping) with the same
parameters and threads. The trainer feeds LightGBM the float32 features the
network gets, the direct run the float64 Parquet columns, so their bins and
validation AUCs can differ in the fourth digit. Prints wall and CPU seconds (process time, all
threads) per run and the ratio streamml/direct (1.0: no overhead). CPU time
is the steadier figure on a shared machine.

    python bench/trainer/gbm.py --rows 200000 --boosting-rounds 100 --rounds 5 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import lightgbm  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from services.trainer.data import FeatureLayout, tensors_from_table  # noqa: E402
from services.trainer.gbm import lightgbm_params, train_lightgbm  # noqa: E402
from services.trainer.metrics import auc  # noqa: E402
from services.trainer.spec import parse_model_spec  # noqa: E402
from services.trainer.synthetic import SPLIT_SHARES, synthetic_dataset  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="train rows")
    parser.add_argument("--boosting-rounds", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3, help="alternating streamml/direct runs")
    parser.add_argument("--threads", type=int, default=1, help="LightGBM threads (1: steadiest on a shared host)")
    args = parser.parse_args()

    spec = parse_model_spec({
        "name": "bench", "dataset": "synthetic", "task": "binary", "flavour": "lightgbm",
        "lightgbm": {"num_boost_round": args.boosting_rounds, "num_leaves": 31, "learning_rate": 0.1},
        "early_stopping": {"patience": None}, "seed": 1,
    })
    manifest, splits = synthetic_dataset(round(args.rows / SPLIT_SHARES["train"]), seed=1)
    layout = FeatureLayout.from_manifest(manifest, "binary")
    with tempfile.TemporaryDirectory() as folder:
        tables = {}
        for split in ("train", "validation"):
            path = Path(folder) / f"{split}.parquet"
            pq.write_table(splits[split], path)
            tables[split] = pq.read_table(path, columns=layout.columns)
    print(f"lightgbm {lightgbm.__version__}  train rows: {tables['train'].num_rows:,}  validation rows: "
          f"{tables['validation'].num_rows:,}  boosting rounds: {args.boosting_rounds}  threads: {args.threads}")

    seconds: dict[str, list[tuple[float, float]]] = {"streamml": [], "direct": []}
    for round_ in range(1, args.rounds + 1):
        for name, run in (("streamml", streamml_run), ("direct", direct_run)):
            wall, cpu = time.perf_counter(), time.process_time()
            validation_auc = run(spec, layout, tables, args.threads)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            seconds[name].append((wall, cpu))
            print(f"round {round_} {name:8s} wall {wall:7.3f} s  CPU {cpu:7.3f} s  validation auc {validation_auc:.4f}")
    for label, pick in (("medians", statistics.median), ("fastest", min)):
        wall, cpu = ([pick(run[i] for run in seconds[name]) for name in ("streamml", "direct")] for i in (0, 1))
        print(f"ratio streamml/direct ({label}): wall {wall[0] / wall[1]:.3f}  CPU {cpu[0] / cpu[1]:.3f}"
              "  (1.0: no overhead)")


def streamml_run(spec, layout: FeatureLayout, tables: dict[str, pa.Table], threads: int) -> float:
    train_data = tensors_from_table(tables["train"], layout)
    validation_data = tensors_from_table(tables["validation"], layout)
    result = train_lightgbm(spec, layout, train_data, validation_data, threads=threads)
    return result.metrics["auc"]


def direct_run(spec, layout: FeatureLayout, tables: dict[str, pa.Table], threads: int) -> float:
    """What a data scientist would write: arrays from the table, lightgbm.train, predict."""
    columns = [*layout.numeric, *layout.categorical]
    train_x, validation_x = (np.column_stack([tables[split].column(name).to_numpy() for name in columns])
                             for split in ("train", "validation"))
    categorical = list(range(len(layout.numeric), len(columns)))
    train_set = lightgbm.Dataset(train_x, tables["train"].column(layout.label).to_numpy(),
                                 categorical_feature=categorical)
    validation_labels = tables["validation"].column(layout.label).to_numpy()
    validation_set = lightgbm.Dataset(validation_x, validation_labels, reference=train_set)
    booster = lightgbm.train(lightgbm_params(spec, layout, threads), train_set, num_boost_round=spec.gbm.num_boost_round,
                             valid_sets=[validation_set])
    return auc(booster.predict(validation_x), validation_labels)


if __name__ == "__main__":
    main()
