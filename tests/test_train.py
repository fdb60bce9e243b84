"""The training loop: learning, determinism, resume equal to an uninterrupted run, divergence."""

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_same_weights, synthetic_mnist
from conftest import train_params as defaults
from torch.utils._python_dispatch import TorchDispatchMode

from alexnet_mnist.evaluate import predict
from alexnet_mnist.model import ModelConfig, to_input
from alexnet_mnist.params import TrainParams
from alexnet_mnist.train import CompiledForOneBatch, DivergedError, epoch_lr, fit, start, summarize_history, train_epoch

MODEL = ModelConfig(image_size=67, dropout=0.5)
CPU = torch.device("cpu")


def train_params(**changes) -> TrainParams:
    """Small, fast settings on the CPU, in fp32, and the reference loop's recipe (constant lr 0.001, no
    augmentation) unless asked: these tests change one knob at a time against it, whatever params.yaml says."""
    plain = {"lr": 1e-3, "lr_decay": 1.0, "shift": 0.0, "rotate": 0.0}
    return defaults(
        **{"epochs": 2, "batch_size": 32, "seed": 7, "device": "cpu", "precision": "fp32", **plain, **changes}
    )


def dataset(n: int, seed: int) -> dict:
    images, labels = synthetic_mnist(n, seed)
    x = torch.from_numpy(images).float().div(255).sub(0.1307).div(0.3081).unsqueeze(1)
    return {"images": x, "labels": torch.from_numpy(labels).long()}


TRAIN, VAL = dataset(160, 1), dataset(64, 2)


def weights(run) -> dict:
    return {k: v.clone() for k, v in run.model.state_dict().items()}


def test_one_step_lowers_the_loss():
    run = start(MODEL, train_params(), CPU)
    x, y = to_input(TRAIN["images"][:32], 67), TRAIN["labels"][:32]
    run.model.eval()  # dropout off, so both losses see the same network
    before = F.cross_entropy(run.model(x), y)
    run.model.train()
    run.optimizer.zero_grad()
    F.cross_entropy(run.model(x), y).backward()
    run.optimizer.step()
    run.model.eval()
    assert F.cross_entropy(run.model(x), y) < before


@pytest.mark.slow  # trains three or more times
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_same_seed_gives_bitwise_identical_weights(precision):
    a = fit(TRAIN, VAL, MODEL, train_params(epochs=1, precision=precision), CPU, precision)
    b = fit(TRAIN, VAL, MODEL, train_params(epochs=1, precision=precision), CPU, precision)
    assert_same_weights(weights(a), weights(b))
    assert a.history[0]["val_accuracy"] == b.history[0]["val_accuracy"]
    c = fit(TRAIN, VAL, MODEL, train_params(epochs=1, seed=8, precision=precision), CPU, precision)
    assert not torch.equal(weights(a)["classifier.7.weight"], weights(c)["classifier.7.weight"])


def test_history_has_a_row_per_epoch_with_fractions():
    run = fit(TRAIN, VAL, MODEL, train_params(epochs=2), CPU, "fp32")
    assert [row["epoch"] for row in run.history] == [1, 2]
    for row in run.history:  # fractions of the 160 training and 64 validation images
        assert row["train_accuracy"] in {k / 160 for k in range(161)}
        assert row["val_accuracy"] in {k / 64 for k in range(65)}
        assert row["seconds"] > 0
    # the last epoch's validation numbers are those of the trained model on the validation images
    loss, predicted = predict(run.model, VAL["images"], VAL["labels"], 32, "fp32")
    assert run.history[-1]["val_accuracy"] == (predicted == VAL["labels"]).sum().item() / 64
    assert run.history[-1]["val_loss"] == pytest.approx(loss, rel=1e-12)


@pytest.mark.slow  # trains three or more times
def test_resume_from_checkpoint_ends_with_the_uninterrupted_weights(tmp_path):
    straight = fit(TRAIN, VAL, MODEL, train_params(epochs=3), CPU, "fp32")
    checkpoint = tmp_path / "checkpoint.pt"
    first = fit(TRAIN, VAL, MODEL, train_params(epochs=1), CPU, "fp32", checkpoint=checkpoint)
    assert checkpoint.is_file() and len(first.history) == 1
    resumed = fit(TRAIN, VAL, MODEL, train_params(epochs=3), CPU, "fp32", checkpoint=checkpoint)
    assert_same_weights(weights(straight), weights(resumed))
    assert [r["val_loss"] for r in resumed.history] == [r["val_loss"] for r in straight.history]


@pytest.mark.slow  # trains three or more times
def test_checkpoint_of_other_params_is_not_reused(tmp_path, capsys):
    checkpoint = tmp_path / "checkpoint.pt"
    fit(TRAIN, VAL, MODEL, train_params(epochs=1, lr=5e-4), CPU, "fp32", checkpoint=checkpoint)
    other = fit(TRAIN, VAL, MODEL, train_params(epochs=1), CPU, "fp32", checkpoint=checkpoint)
    assert "starting over" in capsys.readouterr().out
    assert_same_weights(weights(other), weights(fit(TRAIN, VAL, MODEL, train_params(epochs=1), CPU, "fp32")))


def test_non_finite_loss_stops_naming_epoch_and_step(tmp_path):
    poisoned = {"images": torch.full_like(TRAIN["images"], float("nan")), "labels": TRAIN["labels"]}
    checkpoint = tmp_path / "checkpoint.pt"
    with pytest.raises(DivergedError, match=r"NaN or infinite at epoch 1, step 1 of 5; lower train.lr"):
        fit(poisoned, VAL, MODEL, train_params(), CPU, "fp32", checkpoint=checkpoint)
    assert not checkpoint.exists()


def test_summarize_history_takes_each_splits_last_epoch_and_the_total_speed():
    history = [
        {"epoch": 1, "train_loss": 0.9, "train_accuracy": 0.7, "val_loss": 0.5, "val_accuracy": 0.8, "seconds": 3.0},
        {"epoch": 2, "train_loss": 0.3, "train_accuracy": 0.9, "val_loss": 0.2, "val_accuracy": 0.95, "seconds": 1.0},
    ]
    assert summarize_history(history, images_per_epoch=100) == (
        {"accuracy": 0.9, "loss": 0.3, "seconds": 4.0, "images_per_second": 50.0},
        {"accuracy": 0.95, "loss": 0.2},
    )


@pytest.mark.slow  # trains four times
@pytest.mark.parametrize("changes", [{"lr_decay": 0.5}, {"shift": 2.0, "rotate": 10.0}])
def test_decay_and_augmentation_resume_to_the_uninterrupted_weights(tmp_path, changes):
    straight = fit(TRAIN, VAL, MODEL, train_params(epochs=3, **changes), CPU, "fp32")
    checkpoint = tmp_path / "checkpoint.pt"
    fit(TRAIN, VAL, MODEL, train_params(epochs=1, **changes), CPU, "fp32", checkpoint=checkpoint)
    resumed = fit(TRAIN, VAL, MODEL, train_params(epochs=3, **changes), CPU, "fp32", checkpoint=checkpoint)
    assert_same_weights(weights(straight), weights(resumed))
    assert [r["val_loss"] for r in resumed.history] == [r["val_loss"] for r in straight.history]
    plain = fit(TRAIN, VAL, MODEL, train_params(epochs=3), CPU, "fp32")
    assert not torch.equal(weights(plain)["classifier.7.weight"], weights(straight)["classifier.7.weight"])


def test_each_epoch_trains_at_lr_times_decay_to_the_epoch_index():
    params = train_params(epochs=3, lr=1e-3, lr_decay=0.5)
    run = fit(TRAIN, VAL, MODEL, params, CPU, "fp32")
    assert run.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.5**2)  # epoch 3's
    assert [epoch_lr(params, e) for e in (1, 2, 3)] == pytest.approx([1e-3, 5e-4, 2.5e-4])


def test_augmentation_off_draws_no_random_numbers():
    """With shift and rotate at 0 there is no augmentation, as in the reference loop: its generator is never used."""
    run = fit(TRAIN, VAL, MODEL, train_params(epochs=1), CPU, "fp32")
    assert torch.equal(run.augment.get_state(), torch.Generator().manual_seed(7 + 1).get_state())


class SeededDraws(TorchDispatchMode):
    """Records the shape of every tensor drawn from an explicit generator (torch.rand(..., generator=g))."""

    def __init__(self):
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func is torch.ops.aten.rand.generator:
            self.shapes.append(tuple(out.shape))
        return out


def test_augmentation_draws_once_per_epoch_where_it_drew_once_per_step():
    """The epoch's rotations and shifts come from one draw (one copy to the device, not one per step) that
    leaves the augment generator where drawing each step's batch did: same draws, resume unchanged."""
    params = train_params(epochs=1, shift=2.0, rotate=10.0)
    run = start(MODEL, params, CPU)
    images, labels = TRAIN["images"][:40], TRAIN["labels"][:40]  # batches of 32 and 8
    with SeededDraws() as draws:
        train_epoch(run, run.model, images, labels, params, "fp32")
    assert draws.shapes == [(40, 3)]
    per_step = torch.Generator().manual_seed(7 + 1)  # start()'s augment generator
    for n in (32, 8):
        torch.rand(n, 3, generator=per_step)
    assert torch.equal(run.augment.get_state(), per_step.get_state())


@pytest.mark.slow  # trains three or more times
def test_checkpoint_of_other_augmentation_or_decay_is_not_reused(tmp_path, capsys):
    checkpoint = tmp_path / "checkpoint.pt"
    fit(TRAIN, VAL, MODEL, train_params(epochs=1), CPU, "fp32", checkpoint=checkpoint)
    for changes in ({"lr_decay": 0.9}, {"shift": 1.0}, {"rotate": 5.0}):
        fit(TRAIN, VAL, MODEL, train_params(epochs=1, **changes), CPU, "fp32", checkpoint=checkpoint)
        assert "starting over" in capsys.readouterr().out


@pytest.mark.slow  # imports torch.compile's machinery and traces the model: seconds
def test_compiled_training_compiles_one_graph_and_runs_each_epochs_short_batch_as_it_is():
    graphs, calls = [], []

    def backend(graph, example_inputs):  # torch.compile's real tracing; the graph then runs as traced
        graphs.append(graph)
        return lambda *args: calls.append(len(graphs)) or graph.forward(*args)

    params = train_params(batch_size=32)
    run = start(MODEL, params, CPU)
    network = CompiledForOneBatch(run.model, backend=backend)
    images, labels = TRAIN["images"][:80], TRAIN["labels"][:80]  # batches of 32, 32 and 16
    for _ in range(2):
        loss, accuracy = train_epoch(run, network, images, labels, params, "fp32")
        assert torch.isfinite(torch.tensor(loss)) and (accuracy * 80) % 1 == 0  # over all 80 images
        run.history.append({})
    assert network.batch == 32 and len(graphs) == 1  # the short batch compiled nothing
    assert calls == [1] * 4  # the full batches ran compiled; the short ones (2 of 6) as they are
