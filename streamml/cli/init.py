"""``streamml init NAME --from FILE``: a dataset spec, a model spec and a policy from a sample of your records.

    streamml init cells --from cells.csv     # writes datasets/cells.yaml, models/cells.yaml, policies/cells.yaml

It profiles the sample (types, nulls, ranges, categories), guesses the key,
the label and the event time, chooses the model's task from the label, fits
a linear baseline on 80% of the sample and sets the policy's floors from its
metrics on the other 20%, less the noise of a test split. Each guess is
marked ``# review:`` in the files; the command lists what to check. It never
overwrites a file unless ``--force``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from streamml.cli.common import console, fail


def init(
    name: Annotated[str, typer.Argument(help="dataset and model name (lower-case letters, digits, _)")],
    source: Annotated[Path, typer.Option("--from", help="a sample of your records: .csv, .jsonl or .parquet",
                                         exists=True, dir_okay=False)],
    folder: Annotated[Path, typer.Option("--dir", help="where datasets/, models/ and policies/ go")] = Path("."),
    sample: Annotated[int, typer.Option(help="rows of the file to profile")] = 100_000,
    force: Annotated[bool, typer.Option("--force", help="overwrite files that exist")] = False,
) -> None:
    """Write a dataset spec, a starter model spec and a starter policy from a sample of your records."""
    import re

    import streamml.cli.starter as starter
    from streamml.specs import NAME

    if not re.match(NAME, name):
        fail(f"{name!r} cannot be a dataset name: lower-case letters, digits and _, starting with a letter", 2)
    paths = {kind: folder / kind / f"{name}.yaml" for kind in ("datasets", "models", "policies")}
    existing = [str(path) for path in paths.values() if path.exists()]
    if existing and not force:
        fail(f"{', '.join(existing)} exist(s); nothing was written. Pass --force to overwrite, or choose another "
             "NAME or --dir", 2)
    try:
        table = _read(source, sample)
        profiles = starter.profile_table(table)
        roles = starter.guess_roles(profiles)
        if roles.label is None:
            raise starter.StarterError("no column can be a label (numbers, booleans or categories); add the value "
                                       "to predict to your records")
        label = next(p for p in profiles if p.name == roles.label)
        baseline = starter.fit_baseline(table, roles, profiles)
    except (starter.StarterError, OSError, ValueError) as error:
        fail(f"{source}: {error}", 2)
    splits = starter.splits_for(table.num_rows)
    texts = {
        "datasets": _dataset_spec(name, source, table.num_rows, profiles, roles, splits),
        "models": _model_spec(name, table.num_rows, splits, baseline.task, label),
        "policies": _policy(name, baseline, round(table.num_rows * splits["test"])),
    }
    for kind, path in paths.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(texts[kind])
        console.print(f"wrote {path}", highlight=False)
    shown = ", ".join(f"{metric} {value:.3f}" for metric, value in sorted(baseline.metrics.items()))
    console.print(f"baseline ({'logistic' if baseline.task == 'binary' else 'linear'} model on 80% of {table.num_rows} "
                  f"rows, measured on {baseline.holdout_rows}): {shown}", highlight=False)
    console.print("check before going on (each is marked # review: in the files):", highlight=False)
    for role in ("key", "label", "event_time"):
        chosen = getattr(roles, role)
        console.print(f"  {role}: {chosen or '(none)'} — {roles.why[role]}", highlight=False)
    console.print(f"  task: {baseline.task}, from the label's values; the floors in {paths['policies']} come from "
                  "the baseline", highlight=False)
    console.print("  field types, nullable, min and categories: a value outside them is rejected at ingest",
                  highlight=False)
    console.print(f"  latency: no budget; add one to {paths['policies']} if your application needs it",
                  highlight=False)
    console.print(f"then: streamml datasets validate {paths['datasets']} && streamml models validate "
                  f"{paths['models']} && streamml policies validate {paths['policies']}", highlight=False)


def _read(source: Path, rows: int):
    import pyarrow.csv as pcsv
    import pyarrow.json as pjson
    import pyarrow.parquet as pq

    suffix = source.suffix.lower()
    if suffix == ".csv":
        table = pcsv.read_csv(source)
    elif suffix in (".jsonl", ".ndjson", ".json"):
        table = pjson.read_json(source)
    elif suffix in (".parquet", ".pq"):
        table = pq.read_table(source)
    else:
        raise ValueError(f"unknown format {suffix!r}; use .csv, .jsonl or .parquet")
    if table.num_rows == 0:
        raise ValueError("the file has no rows")
    return table.slice(0, rows)


def _dataset_spec(name, source, rows, profiles, roles, splits) -> str:
    from streamml.cli.starter import yaml_value

    lines = [f"# Dataset spec written by `streamml init` from {rows} rows of {source.name}.",
             "# Lines marked 'review:' are guesses; a record that breaks a rule here goes to dlq.ingest.",
             f"name: {name}",
             f"key: {roles.key}  # review: {roles.why['key']}"]
    if roles.event_time:
        lines.append(f"event_time: {roles.event_time}  # review: {roles.why['event_time']}")
    else:
        lines.append(f"# event_time: none — review: {roles.why['event_time']}")
    if roles.label:
        lines.append(f"label: {roles.label}  # review: {roles.why['label']}")
    lines.append("fields:")
    for p in profiles:
        spec: dict = {"name": p.name, "type": p.type}
        notes = [p.seen()]
        if p.nulls:
            spec["nullable"] = True
            spec["nulls"] = "drop" if p.name == roles.label else "impute" if p.type in ("int", "float", "category") \
                else "keep"
        if p.type in ("int", "float") and p.low is not None:
            if p.name == roles.label and p.values and set(p.values) <= {"0", "1"}:
                spec["min"], spec["max"] = 0, 1
            elif p.low >= 0:
                spec["min"] = 0
                notes.append("min 0: no negative value seen")
        if p.type == "category":
            spec["categories"] = p.values
            notes.append("a value not listed is rejected; drop the list to accept any")
        lines.append(f"  - {yaml_value(spec)}  # review: {'; '.join(notes)}")
    lines += ["prep:",
              f"  splits: {yaml_value(splits)}",
              f"  min_new_rows: {min(10_000, rows)}  # build a version once this many new records have landed",
              "  max_staleness_s: 300  # or once the oldest of fewer has waited this long",
              ""]
    return "\n".join(lines)


def _model_spec(name, rows, splits, task, label) -> str:
    train_rows = rows * splits["train"]
    batch = 1 << max(5, min(10, int(train_rows / 8).bit_length() - 1))  # about 8 batches an epoch, 32 to 1024
    metric = {"binary": "log_loss", "multiclass": "log_loss", "regression": "rmse"}[task]
    return "\n".join([
        f"# Starter model spec written by `streamml init`: a small MLP for {task}.",
        f"name: {name}",
        f"dataset: {name}",
        f"task: {task}  # review: from label {label.name!r} ({label.type}, {label.distinct} distinct values)",
        "architecture:",
        f"  hidden: {[64, 32] if rows >= 5_000 else [32]}",
        "  dropout: 0.1",
        "optimiser: {name: adamw, lr: 0.003, weight_decay: 0.0001}",
        f"batch_size: {batch}  # about eight batches an epoch on the sample's train split",
        f"max_epochs: {60 if rows < 10_000 else 20}",
        f"early_stopping: {{metric: {metric}, patience: 8}}",
        "seed: 7",
        "",
    ])


def _policy(name, baseline, test_rows) -> str:
    from streamml.cli.starter import FLOOR_STANDARD_ERRORS, bounds, yaml_value

    floors, ceilings = bounds(baseline, test_rows)
    seen = ", ".join(f"{metric} {value:.4g}" for metric, value in sorted(baseline.metrics.items()))
    primary = next(iter(floors or ceilings))
    lines = ["# Starter promotion policy written by `streamml init`. A linear baseline fitted on the sample scored",
             f"# {seen} on {baseline.holdout_rows} held-out rows. The bound on {primary} is the baseline's less "
             f"{FLOOR_STANDARD_ERRORS:g} standard errors",
             f"# of its difference from a score on a test split of ~{test_rows} other rows, so a model at least as "
             "good as the baseline passes."]
    if "log_loss" in ceilings:
        lines.append("# log_loss must beat always predicting the label's frequencies (a model that learnt nothing).")
    lines.append(f"model: {name}")
    if floors:
        lines.append(f"min: {yaml_value(floors)}  # review: from the baseline")
    if ceilings:
        lines.append(f"max: {yaml_value(ceilings)}  # review: from the baseline and the label's frequencies")
    regression = 0.02 if primary in ("auc", "accuracy", "log_loss") else round(ceilings[primary] * 0.05, 4)
    lines += [f"# A new version may be at most this much worse than the champion on {primary}:",
              f"max_regression: {yaml_value({primary: regression})}",
              "# No latency rule: only your application knows its budget, and a budget near the model's own cost",
              "# rejects good models whenever the host is busy. The validator measures a predict call's p95 either way",
              "# (5 rounds, the least disturbed counts) and records it in the decision. To enforce one:",
              "# latency: {p95_ms: 50, batch_size: 256}  # review: p95 of one predict call of 256 rows",
              ""]
    return "\n".join(lines)
