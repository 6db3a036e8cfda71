"""``streamml policies``: promotion policies, checked before the validator reads them.

    streamml policies validate policies/fraud.yaml   # every problem at once, checked against ./models, ./datasets

The validator re-reads its policies folder when a file changes; ``streamml
models judge NAME VERSION`` then judges a version again under the new policy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from streamml.cli.common import check_files, folder_or_default
from streamml.cli.models import DatasetsDir

app = typer.Typer(help="Promotion policies.", no_args_is_help=True)


@app.callback()
def policies() -> None:
    """Promotion policies."""


@app.command("validate")
def validate(
    files: Annotated[list[Path], typer.Argument(help="policy YAML files")],
    models: Annotated[Path | None, typer.Option(
        "--models", help="folder of model specs to check against [default: ./models when it exists]")] = None,
    datasets: DatasetsDir = None,
) -> None:
    """Check policies, and that the validator can judge each rule for its model; report every problem at once."""
    from services.trainer.spec import load_model_specs
    from services.validator.policy import PolicyError, as_written, load_policy, model_problems
    from streamml.specs import SpecError, load_dataset_specs, read_yaml

    models_dir, datasets_dir = folder_or_default(models, "models"), folder_or_default(datasets, "datasets")
    specs, dataset_specs, folder_problems = {}, {}, []
    for folder, load, into in ((models_dir, load_model_specs, specs), (datasets_dir, load_dataset_specs, dataset_specs)):
        if folder is not None:
            try:
                into.update(load(folder))
            except SpecError as error:
                folder_problems += [f"cannot check against {folder}/: {line}" for line in error.problems]

    def check(path: Path) -> tuple[str, list[str]]:
        problems = list(folder_problems)
        try:
            policy = load_policy(path)
        except PolicyError as error:
            problems += error.problems
            try:
                policy = as_written(read_yaml(path, PolicyError))
            except PolicyError:  # unreadable: its one problem is reported already
                policy = None
            if policy is None:
                return "", problems
        spec = specs.get(policy.model)
        if models_dir is not None and spec is None:
            problems.append(f"model: {policy.model!r} is not among the model specs in {models_dir}/ "
                            f"(they declare: {', '.join(sorted(specs)) or 'none'})")
        dataset = dataset_specs.get(spec.dataset) if spec is not None else None
        categories = {f.name for f in dataset.features if f.type == "category"} if dataset is not None else None
        problems += model_problems(policy, spec.task if spec else None, categories)
        rules = len(policy.min) + len(policy.max) + len(policy.max_regression) + len(policy.min_improvement)
        latency = f"latency p95 <= {policy.latency.p95_ms:g} ms" if policy.latency else "no latency budget"
        against = ", ".join(f"{f}/" for f in (models_dir, datasets_dir) if f is not None) or "nothing (--models)"
        return (f"policy of model {policy.model!r}: {rules} metric rules, {len(policy.slices)} slice rules, "
                f"{latency}; checked against {against}"), problems

    check_files(files, check)
