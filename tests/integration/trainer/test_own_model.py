"""A data scientist's own model through the real services: a module of their own (the example's
residual MLP) and a training function of their own are trained by the trainer, judged and promoted
by the validator and served by the SDK; broken code goes to the dead-letter topic naming its spec,
while the trainer keeps running and the other specs of the dataset still train."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

from registry_world import World, make_world, messages, put_dataset, put_spec, raw_records, spec_document
from services.trainer.user_code import add_code_dir, code_digest, resolve
from streamml.events import DatasetReady, ModelPromoted, ModelTrained
from streamml.kafka import dead_letter_reason
from streamml.registry.models import read_card, read_champion
from streamml.sdk.client import ModelClient
from streamml.settings import ServiceSettings

pytestmark = pytest.mark.integration
EXAMPLE_CODE = Path(__file__).resolve().parents[3] / "examples" / "code"
OWN_MODULE = {"module": "fraud_models.residual:build", "params": {"width": 16, "blocks": 1}}
OWN_FIT = {"entrypoint": "fraud_models.fit:fit", "params": {"epochs": 2, "network": {"width": 16, "blocks": 1}}}
MODELS = ("own_module", "own_fit")


@pytest.fixture
def world(stack, unique, bucket, store, tmp_path) -> World:
    """The trainer's and the validator's topics, a model spec folder and a policy folder."""
    policies = tmp_path / "policies"
    policies.mkdir()
    topics = {name: 1 for name in ("dataset.ready", "model.trained", "dlq.trainer", "model.promoted",
                                   "model.rejected", "dlq.validator")}
    topics.update({f"{kind}.{model}": 1 for model in MODELS for kind in ("predictions", "feedback")})
    env = {"STREAMML_TRAINER_MODELS_DIR": str(tmp_path / "models"), "STREAMML_TRAINER_DEVICE": "cpu",
           "STREAMML_TRAINER_CPU_THREADS": "1", "STREAMML_VALIDATOR_POLICIES_DIR": str(policies)}
    return make_world(stack, store, bucket, tmp_path / "models", f"own{unique}.", topics, env)


def write_spec(world: World, **document: object) -> None:
    document = spec_document(**document)
    if "training" in document:
        del document["architecture"]
    (world.folder / f"{document['name']}.yaml").write_text(yaml.safe_dump(document))


def test_an_own_module_and_an_own_training_function_are_trained_promoted_and_served(world, services, tmp_path):
    write_spec(world, name="own_module", architecture=OWN_MODULE, max_epochs=3)
    write_spec(world, name="own_fit", training=OWN_FIT)
    for model in MODELS:
        (tmp_path / "policies" / f"{model}.yaml").write_text(f"model: {model}\nmin: {{auc: 0.75}}\n")
    put_spec(world.store)
    manifest, _ = put_dataset(world.store, rows=4000)
    trainer = services.start("trainer", world.bucket, **world.env, STREAMML_TRAINER_CODE_DIR=str(EXAMPLE_CODE))
    validator = services.start("validator", world.bucket, **world.env)
    world.send(DatasetReady.of(manifest, "manual"))

    trained = {e.model: e for e in world.events("model.trained", 2, timeout=120) if isinstance(e, ModelTrained)}
    assert sorted(trained) == sorted(MODELS), trainer.log_path.read_text()[-4000:]
    promoted = {e.model: e for e in world.events("model.promoted", 2, timeout=120) if isinstance(e, ModelPromoted)}
    assert {model: e.version for model, e in promoted.items()} == {m: trained[m].version for m in MODELS}, \
        validator.log_path.read_text()[-4000:]

    # The card names the code that made the model: the same digest as the example folder's files.
    add_code_dir(EXAMPLE_CODE)
    try:
        for reference in ("fraud_models.residual:build", "fraud_models.fit:fit"):
            resolve("test", reference)
        expected = {reference: code_digest([reference])["sha256"]
                    for reference in ("fraud_models.residual:build", "fraud_models.fit:fit")}
    finally:
        sys.path.remove(str(EXAMPLE_CODE.resolve()))
    module_card = read_card(world.store, "own_module", trained["own_module"].version)
    fit_card = read_card(world.store, "own_fit", trained["own_fit"].version)
    assert module_card["user_code"]["sha256"] == expected["fraud_models.residual:build"]
    assert module_card["user_code"]["files"] == ["fraud_models/__init__.py", "fraud_models/fit.py",
                                                 "fraud_models/residual.py"]
    assert fit_card["user_code"]["sha256"] == expected["fraud_models.fit:fit"]
    assert module_card["params"]["architecture"] == OWN_MODULE
    assert module_card["selection"]["epochs"] == 3 and len(module_card["history"]) == 3
    assert len(fit_card["history"]) == 2 and fit_card["history"][0]["lr"] is None
    assert module_card["artifacts"]["format"] == fit_card["artifacts"]["format"] == "torch.export"
    for card in (module_card, fit_card):
        assert card["metrics"]["auc"] > 0.75  # both learnt the synthetic signal

    # Served by the SDK from the registry: the exported program needs none of the model's code.
    settings = ServiceSettings(kafka=world.kafka, s3=world.store.settings)
    records = raw_records()[:16]
    for model in MODELS:
        with ModelClient(settings, model, log_predictions=False) as client:
            assert client.wait_ready(60), model
            answer = client.predict(records)
            assert answer.version == promoted[model].version == read_champion(world.store, model)[0].version
            assert answer.outputs.shape == (16,) and np.all((answer.outputs >= 0) & (answer.outputs <= 1))
    assert trainer.poll() is None and validator.poll() is None


BROKEN = {
    "broken/__init__.py": "",
    "broken/typo.py": "import torch\nfrom torch import nn\nnn.Linearr\n",
    "broken/nets.py": """
        from torch import nn

        def raises(schema, params):
            raise RuntimeError("width must be even, got 7")

        def narrow(schema, params):
            return nn.Linear(3, 1)

        class Constant(nn.Module):
            def forward(self, numeric, categorical):
                return numeric.sum(dim=1) * 0

        def nothing_to_learn(schema, params):
            return Constant()
    """,
    "broken/fits.py": """
        def raises(run):
            raise KeyError("learning_rate")
    """,
}


def test_broken_code_goes_to_the_dead_letter_topic_naming_the_spec_while_the_rest_trains(world, services, tmp_path):
    code = tmp_path / "code"
    for path, text in BROKEN.items():
        (code / path).parent.mkdir(parents=True, exist_ok=True)
        (code / path).write_text(textwrap.dedent(text))
    write_spec(world, name="import_error", architecture={"module": "broken.typo:build"})
    write_spec(world, name="builder_raises", architecture={"module": "broken.nets:raises"})
    write_spec(world, name="wrong_inputs", architecture={"module": "broken.nets:narrow"})
    write_spec(world, name="fit_raises", training={"entrypoint": "broken.fits:raises"})
    write_spec(world, name="no_parameters", architecture={"module": "broken.nets:nothing_to_learn"})
    write_spec(world, name="built_in", max_epochs=1)
    first, _ = put_dataset(world.store, rows=2000)
    trainer = services.start("trainer", world.bucket, **world.env, STREAMML_TRAINER_CODE_DIR=str(code))
    world.send(DatasetReady.of(first, "manual"))

    # The spec the trainer trains itself is trained all the same...
    [trained] = world.events("model.trained", 1, timeout=90) or [None]
    assert trained is not None and trained.model == "built_in", trainer.log_path.read_text()[-4000:]
    # ...and the event goes to the dead-letter topic once, with every broken spec and why.
    [dead] = world.read("dlq.trainer", 1, timeout=30)
    reason = dead_letter_reason(dead)
    for problem in (
        "model spec 'import_error': broken.typo:build: cannot import broken.typo: AttributeError",
        "model spec 'builder_raises': broken.nets:raises: the builder raised RuntimeError: width must be even, got 7",
        "model spec 'wrong_inputs': broken.nets:narrow: forward(numeric [N, 6] float32, categorical [N, 2] int64) "
        "raised",
        "model spec 'fit_raises': broken.fits:raises: the training function raised KeyError: 'learning_rate'",
        # It fits the data, but fails in the trainer's loop: the optimiser has nothing to train.
        "model spec 'no_parameters': broken.nets:nothing_to_learn: training failed: ValueError: optimizer got an "
        "empty parameter list",
    ):
        assert problem in reason, reason
    # The import error was known at start, and did not stop the service: no crash loop.
    [at_start] = messages(trainer.log_path, "the code of a model spec cannot be loaded; "
                                            "its datasets go to the dead-letter topic")
    assert at_start["model"] == "import_error"
    second, _ = put_dataset(world.store, version=2, rows=2000)
    world.send(DatasetReady.of(second, "manual"))
    assert len(world.read("dlq.trainer", 2, timeout=90)) == 2
    assert [e.model for e in world.events("model.trained", 2, timeout=30)] == ["built_in", "built_in"]
    assert trainer.poll() is None, trainer.log_path.read_text()[-4000:]
    assert messages(trainer.log_path, "event failed; sent to the dead-letter topic") != []
