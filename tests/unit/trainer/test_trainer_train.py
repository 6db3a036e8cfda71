import pytest
import torch

from services.trainer.data import TabularTensors
from services.trainer.train import (
    TrainingInterrupted,
    batch_bounds,
    checkpoint_bytes,
    is_improvement,
    predict_scores,
    train,
)
from services.trainer.metrics import validation_metrics

pytestmark = pytest.mark.unit


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    left, right = a.state_dict(), b.state_dict()
    return left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)


def test_same_seed_and_data_give_identical_results(binary, make_spec):
    spec = make_spec()
    first = train(spec, binary.layout, binary.train, binary.validation, device="cpu")
    second = train(spec, binary.layout, binary.train, binary.validation, device="cpu")
    assert first.metrics == second.metrics
    assert same_weights(first.net, second.net)
    other_seed = train(make_spec(seed=12), binary.layout, binary.train, binary.validation, device="cpu")
    assert other_seed.metrics != first.metrics


def test_caller_random_state_is_left_alone(binary, make_spec):
    before = torch.get_rng_state()
    train(make_spec(max_epochs=1), binary.layout, binary.train, binary.validation, device="cpu")
    assert torch.equal(before, torch.get_rng_state())


@pytest.mark.parametrize("interrupt_after", [1, 2])
def test_resumed_run_equals_uninterrupted_run(binary, make_spec, interrupt_after):
    spec = make_spec(max_epochs=4)
    uninterrupted = train(spec, binary.layout, binary.train, binary.validation, device="cpu")

    saved = []
    with pytest.raises(TrainingInterrupted) as stopped:
        train(spec, binary.layout, binary.train, binary.validation, device="cpu",
              on_checkpoint=lambda checkpoint: saved.append(checkpoint_bytes(checkpoint)),
              should_stop=lambda: len(saved) == interrupt_after)
    assert stopped.value.epoch == interrupt_after == len(saved)

    resumed_epochs = []
    resumed = train(spec, binary.layout, binary.train, binary.validation, device="cpu",
                    resume_from=saved[-1], on_epoch=resumed_epochs.append)
    assert [report.epoch for report in resumed_epochs] == list(range(interrupt_after + 1, 5))
    assert resumed.metrics == uninterrupted.metrics
    assert resumed.best_epoch == uninterrupted.best_epoch
    assert [r.metrics for r in resumed.history] == [r.metrics for r in uninterrupted.history]
    assert same_weights(resumed.net, uninterrupted.net)


def test_checkpoint_of_another_spec_or_dataset_is_refused(binary, make_spec):
    saved = []
    train(make_spec(max_epochs=1), binary.layout, binary.train, binary.validation, device="cpu",
          on_checkpoint=saved.append)
    with pytest.raises(ValueError, match="the spec changed since"):
        train(make_spec(max_epochs=2, seed=5), binary.layout, binary.train, binary.validation, resume_from=saved[0])
    fewer = binary.train.take(torch.arange(100))
    with pytest.raises(ValueError, match=f"written for {len(binary.train)} train rows, this split has 100"):
        train(make_spec(max_epochs=1), binary.layout, fewer, binary.validation, resume_from=saved[0])


@pytest.mark.parametrize(("task", "metric", "bound"), [
    ("binary", "auc", 0.9),
    ("multiclass", "accuracy", 0.75),
])
def test_classifiers_learn_the_signal(make_prepared, make_spec, task, metric, bound):
    data = make_prepared(task, rows=6000)
    result = train(make_spec(task, max_epochs=4), data.layout, data.train, data.validation, device="cpu")
    assert result.metrics[metric] > bound


def test_regression_beats_predicting_the_mean(make_prepared, make_spec):
    data = make_prepared("regression", rows=6000)
    result = train(make_spec("regression", max_epochs=6), data.layout, data.train, data.validation, device="cpu")
    assert result.metrics["rmse"] < 0.5 * data.validation.label.std().item()


def test_early_stopping_keeps_the_best_epoch(binary, make_spec):
    # Validation labels unrelated to the features: the metric only wanders, so patience runs out.
    generator = torch.Generator().manual_seed(0)
    noise = torch.randint(0, 2, (len(binary.validation),), generator=generator).float()
    validation = TabularTensors(binary.validation.numeric, binary.validation.categorical, noise)
    spec = make_spec(max_epochs=30, early_stopping={"metric": "log_loss", "patience": 2})
    result = train(spec, binary.layout, binary.train, validation, device="cpu")

    assert result.stopped_early and result.epochs == result.best_epoch + 2 < 30
    losses = [report.metrics["log_loss"] for report in result.history]
    assert result.metrics["log_loss"] == min(losses) == losses[result.best_epoch - 1]
    # The returned weights are the best epoch's, not the last one's.
    rescored = validation_metrics("binary", predict_scores(result.net, validation, torch.device("cpu")), noise.numpy())
    assert rescored == result.metrics


def test_progress_reports_every_epoch_with_throughput_and_schedule(binary, make_spec):
    reports = []
    train(make_spec(max_epochs=3, optimiser={"name": "sgd", "lr": 0.1}, schedule={"kind": "step", "step_epochs": 1, "gamma": 0.5}),
          binary.layout, binary.train, binary.validation, device="cpu", on_epoch=reports.append)
    assert [r.epoch for r in reports] == [1, 2, 3]
    assert [r.lr for r in reports] == pytest.approx([0.1, 0.05, 0.025])
    assert all(r.samples_per_s > 0 and r.metric == r.metrics["auc"] for r in reports)


def test_batches_cover_every_row_once_without_a_one_row_tail():
    assert batch_bounds(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert batch_bounds(9, 4) == [(0, 4), (4, 9)]
    assert batch_bounds(1, 4) == [(0, 1)]


def test_improvement_follows_the_mode_and_ignores_nan():
    assert is_improvement(0.8, None, "max")
    assert is_improvement(0.8, 0.7, "max") and not is_improvement(0.7, 0.8, "max")
    assert is_improvement(0.7, 0.8, "min") and not is_improvement(0.8, 0.8, "min")
    assert not is_improvement(float("nan"), 0.8, "max")
    assert is_improvement(0.1, float("nan"), "max")


def test_row_weights_let_new_rows_outweigh_many_old_ones_of_the_opposite_rule(binary, make_spec):
    """Each train row twice: as it is (the new world) and with its label flipped (the old world). Unweighted,
    the two rules cancel; with the old copies weighing 0.05, the model learns the new rule."""
    new = binary.train
    old = TabularTensors(new.numeric, new.categorical, 1.0 - new.label)
    both = TabularTensors(*(torch.cat([a, b]) for a, b in zip(new.tensors(), old.tensors(), strict=True)))
    weights = torch.cat([torch.ones(len(new)), torch.full((len(old),), 0.05)]).double()
    spec = make_spec(max_epochs=3)
    weighted = train(spec, binary.layout, both, binary.validation, device="cpu", train_weights=weights)
    unweighted = train(spec, binary.layout, both, binary.validation, device="cpu")
    assert weighted.metrics["auc"] > 0.85
    assert unweighted.metrics["auc"] < weighted.metrics["auc"] - 0.1


def test_equal_row_weights_train_the_same_model_as_none(binary, make_spec):
    spec = make_spec(max_epochs=2)
    plain = train(spec, binary.layout, binary.train, binary.validation, device="cpu")
    equal = train(spec, binary.layout, binary.train, binary.validation, device="cpu",
                  train_weights=torch.full((len(binary.train),), 0.3, dtype=torch.float64))
    assert equal.metrics == pytest.approx(plain.metrics, rel=1e-4)
    with pytest.raises(ValueError, match="one weight per train row"):
        train(spec, binary.layout, binary.train, binary.validation, device="cpu", train_weights=torch.ones(3))


def test_min_steps_trains_a_small_split_for_more_epochs_on_a_schedule_of_that_length(binary, make_spec):
    batches = len(batch_bounds(len(binary.train), 128))
    spec = make_spec(max_epochs=2, min_steps=3 * batches + 1, optimiser={"name": "sgd", "lr": 0.1})
    reports = []
    result = train(spec, binary.layout, binary.train, binary.validation, device="cpu", on_epoch=reports.append)
    assert result.epochs == 4 and not result.stopped_early
    # Cosine decay over the 4 epochs the steps need, not over max_epochs 2.
    assert [r.lr for r in reports] == pytest.approx([0.1, 0.1 * (1 + 2**-0.5) / 2, 0.05, 0.1 * (1 - 2**-0.5) / 2])
