"""Trainer throughput against a bare PyTorch loop on the same model and data.

Synthetic prepared data (default: 1,000,000 train rows, 6 numeric + 2
categorical features, binary label) is written to Parquet, loaded through the
trainer's column reader, then trained for a fixed number of epochs in this
process by (a) ``services.trainer.train.train`` and (b) a bare loop (randperm,
index slicing, forward, BCE, backward, step) with the same network, batch size
and optimiser, alternating over a few rounds. Prints samples/s per epoch for
both and the ratio of their throughput after warm-up (the first epoch of each
run is left out); the trainer's per-batch overhead is small when the ratio is
near 1.

``--own-module`` runs both loops on a module of the user's own instead of the
built-in network (the example residual MLP, ``examples/code/fraud_models``,
named by the spec's ``architecture.module``), so the ratio measures the
trainer's loop around a model it does not know.

On CPU it also prints samples per CPU-second (process time, all threads):
other processes on a shared machine slow wall-clock epochs at random, but
hardly change the CPU time an epoch needs. That figure includes the trainer's
per-epoch validation pass, so the validation split is kept small.

    python bench/trainer/run.py --device auto --epochs 3
    python bench/trainer/run.py --own-module --rows 200000
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from services.trainer.data import FeatureLayout, TabularTensors, read_parquet, tensors_from_table  # noqa: E402
from services.trainer.model import build_network  # noqa: E402
from services.trainer.spec import ModelSpec, parse_model_spec  # noqa: E402
from services.trainer.synthetic import SPLIT_SHARES, synthetic_dataset  # noqa: E402
from services.trainer.train import describe_device, resolve_device, train  # noqa: E402
from services.trainer.user_code import add_code_dir  # noqa: E402

EXAMPLE_CODE = Path(__file__).resolve().parents[2] / "examples" / "code"

VALIDATION_ROWS = 10_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="train rows")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="alternating bare/trainer runs")
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--hidden", default="64,64", help="MLP widths, comma separated")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for torch")
    parser.add_argument("--own-module", action="store_true",
                        help="the example's residual MLP (fraud_models.residual:build) instead of the built-in MLP")
    parser.add_argument("--width", type=int, default=64, help="--own-module: residual width")
    parser.add_argument("--blocks", type=int, default=2, help="--own-module: residual blocks")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)

    if args.own_module:
        add_code_dir(EXAMPLE_CODE)
        architecture = {"module": "fraud_models.residual:build", "params": {"width": args.width, "blocks": args.blocks}}
        described = f"fraud_models.residual:build (own module, width {args.width}, {args.blocks} blocks)"
    else:
        architecture = {"hidden": [int(width) for width in args.hidden.split(",")]}
        described = args.hidden
    spec = parse_model_spec({
        "name": "bench", "dataset": "synthetic", "task": "binary",
        "architecture": architecture,
        "optimiser": {"name": "adam", "lr": 1e-3},
        "batch_size": args.batch_size, "max_epochs": args.epochs,
        "early_stopping": {"patience": None}, "seed": 1,
    })
    layout, train_data, validation_data = load_data(args.rows)
    print(f"device: {describe_device(device)}  torch {torch.__version__}")
    print(f"train rows: {len(train_data):,}  validation rows: {len(validation_data):,}  "
          f"batch: {args.batch_size}  epochs: {args.epochs}  rounds: {args.rounds}")
    print(f"model: {len(layout.numeric)} numeric + {len(layout.categorical)} categorical (embeddings) "
          f"-> {described} -> 1, optimiser adam")

    wall = {"bare loop": [], "trainer": []}
    cpu = {"bare loop": [], "trainer": []}
    # Alternating rounds spread load from other processes over both loops alike.
    for round_ in range(1, args.rounds + 1):
        for name, run in (("bare loop", bare_loop), ("trainer", trainer_loop)):
            epochs_wall, epochs_cpu, note = run(spec, layout, train_data, validation_data, device)
            print(f"round {round_} {name:9s} samples/s per epoch: {fmt(epochs_wall)}  {note}")
            wall[name] += epochs_wall[1:] or epochs_wall
            cpu[name] += epochs_cpu[1:] or epochs_cpu

    print("after warm-up (first epoch of each run left out):")
    for name in wall:
        line = f"  {name:9s} samples/s median {statistics.median(wall[name]):>10,.0f}  best {max(wall[name]):>10,.0f}"
        if device.type == "cpu":
            line += f"  samples/CPU-s median {statistics.median(cpu[name]):>10,.0f}"
        print(line)
    ratio = (f"ratio trainer/bare: median {statistics.median(wall['trainer']) / statistics.median(wall['bare loop']):.3f}"
             f"  best {max(wall['trainer']) / max(wall['bare loop']):.3f}")
    if device.type == "cpu":
        ratio += f"  per CPU-second {statistics.median(cpu['trainer']) / statistics.median(cpu['bare loop']):.3f}"
    print(ratio + "  (target >= 0.9)")


def load_data(train_rows: int) -> tuple[FeatureLayout, TabularTensors, TabularTensors]:
    manifest, splits = synthetic_dataset(round(train_rows / SPLIT_SHARES["train"]), seed=1)
    layout = FeatureLayout.from_manifest(manifest, "binary")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "train.parquet"
        pq.write_table(splits["train"], path)
        started = time.perf_counter()
        train_data = tensors_from_table(read_parquet([path], layout.columns), layout)
        seconds = time.perf_counter() - started
    print(f"parquet -> tensors: {seconds:.3f} s for {len(train_data):,} rows "
          f"({len(train_data) / seconds:,.0f} rows/s)")
    validation_data = tensors_from_table(splits["validation"].slice(0, VALIDATION_ROWS), layout)
    return layout, train_data, validation_data


def trainer_loop(spec, layout, data, validation, device) -> tuple[list[float], list[float], str]:
    reports, cpu_marks = [], [time.process_time()]

    def on_epoch(report):
        reports.append(report)
        cpu_marks.append(time.process_time())

    result = train(spec, layout, data, validation, device=device.type, on_epoch=on_epoch)
    per_cpu_second = [len(data) / (after - before) for before, after in zip(cpu_marks, cpu_marks[1:])]
    return [report.samples_per_s for report in reports], per_cpu_second, f"validation auc {result.metrics['auc']:.4f}"


def bare_loop(spec: ModelSpec, layout: FeatureLayout, data: TabularTensors, validation, device: torch.device):
    """The reference: nothing but shuffled index slicing and the optimiser step."""
    torch.manual_seed(spec.seed)
    net = build_network(spec, layout).to(device)
    optimiser = torch.optim.Adam(net.parameters(), lr=spec.optimiser.lr)
    numeric, categorical, label = (tensor.to(device) for tensor in data.tensors())
    rows, batch = len(data), spec.batch_size
    # Same precision as the trainer, so the ratio measures loop overhead only.
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    per_wall_second, per_cpu_second = [], []
    for _ in range(spec.max_epochs):
        started, started_cpu = time.perf_counter(), time.process_time()
        order = torch.randperm(rows).to(device)
        net.train()
        for start in range(0, rows, batch):
            index = order[start : start + batch]
            with autocast:
                scores = net(numeric[index], categorical[index])
            loss = F.binary_cross_entropy_with_logits(scores.float(), label[index])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        per_wall_second.append(rows / (time.perf_counter() - started))
        per_cpu_second.append(rows / (time.process_time() - started_cpu))
    return per_wall_second, per_cpu_second, ""


def fmt(values: list[float]) -> str:
    return "[" + ", ".join(f"{value:,.0f}" for value in values) + "]"


if __name__ == "__main__":
    main()
