import math
from types import SimpleNamespace

import pytest
import torch

import dlbook as dl
from dlbook import zoo

SMALL = {
    "mlp": dl.Recipe("mlp", {"hidden": 16}, num_epochs=1, batch_size=64),
    "cnn": dl.Recipe("cnn", {"c1": 4, "c2": 8, "hidden": 16}, num_epochs=1, batch_size=64),
}


@pytest.fixture
def artifacts(tmp_path, monkeypatch):
    monkeypatch.setenv("DLBOOK_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    monkeypatch.setattr(zoo, "RECIPES", SMALL)
    return tmp_path / "artifacts"


def test_trains_and_caches_when_absent(artifacts, tiny_splits):
    model, meta = dl.trained_model("cnn", data=tiny_splits)
    assert (artifacts / "cnn" / "model.safetensors").is_file()
    assert meta["recipe"]["model"] == "cnn" and 0 <= meta["test_acc"] <= 1
    assert not model.training


def test_loads_from_artifacts_without_training(artifacts, tiny_splits, monkeypatch):
    first, _ = dl.trained_model("mlp", data=tiny_splits)

    def no_training(*args, **kwargs):
        raise AssertionError("the cached model should have been loaded")

    monkeypatch.setattr(zoo, "train_recipe", no_training)
    second, meta = dl.trained_model("mlp", data=tiny_splits)
    X = tiny_splits.X_test
    assert torch.equal(first(X), second(X)) and meta["normalization"] == [
        dl.MNIST_MEAN,
        dl.MNIST_STD,
    ]


def test_a_damaged_cache_is_retrained(artifacts, tiny_splits, capsys):
    dl.trained_model("mlp", data=tiny_splits)
    (artifacts / "mlp" / "model.safetensors").write_bytes(b"garbage")
    model, _ = dl.trained_model("mlp", data=tiny_splits)
    assert "training it again" in capsys.readouterr().out
    assert dl.load_trained(artifacts / "mlp" / "model")[1]["recipe"]["model"] == "mlp"


def test_unknown_name(artifacts):
    with pytest.raises(ValueError, match="unknown model 'rnn'"):
        dl.trained_model("rnn")


# Optimizers, schedules and the learning-rate search.

TORCH_OPTIMIZERS = {  # what each Recipe.optimizer means, written with torch directly
    "sgd": lambda params, lr, wd: torch.optim.SGD(params, lr=lr, weight_decay=wd),
    "momentum": lambda params, lr, wd: torch.optim.SGD(
        params, lr=lr, momentum=0.9, weight_decay=wd
    ),
    "adam": lambda params, lr, wd: torch.optim.Adam(params, lr=lr, weight_decay=wd),
    "adamw": lambda params, lr, wd: torch.optim.AdamW(params, lr=lr, weight_decay=wd),
}


@pytest.mark.parametrize("name", zoo.OPTIMIZERS)
def test_make_optimizer_builds_the_named_torch_optimizer(name):
    recipe = dl.Recipe("mlp", lr=0.05, weight_decay=0.01, optimizer=name, schedule="constant")
    optimizer, scheduler = zoo.make_optimizer(recipe, dl.MLP(hidden=8), steps_per_epoch=10)
    reference = TORCH_OPTIMIZERS[name](dl.MLP(hidden=8).parameters(), 0.05, 0.01)
    assert type(optimizer) is type(reference) and scheduler is None
    assert optimizer.defaults == reference.defaults  # lr, momentum, betas, weight decay, ...


@pytest.mark.parametrize("name", zoo.OPTIMIZERS)
def test_onecycle_spans_every_step_and_peaks_at_the_recipe_lr(name):
    recipe = dl.Recipe("mlp", num_epochs=3, lr=0.05, optimizer=name, schedule="onecycle")
    optimizer, scheduler = zoo.make_optimizer(recipe, dl.MLP(hidden=8), steps_per_epoch=10)
    assert isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR)
    assert scheduler.total_steps == 30
    lrs = []
    for _ in range(30):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert max(lrs) == pytest.approx(0.05) and lrs[0] < 0.05 / 10 and lrs[-1] < lrs[0]


def test_onecycle_leaves_plain_sgd_without_momentum():
    recipe = dl.Recipe("mlp", optimizer="sgd", schedule="onecycle")
    optimizer, _ = zoo.make_optimizer(recipe, dl.MLP(hidden=8), steps_per_epoch=10)
    assert optimizer.param_groups[0]["momentum"] == 0.0  # not one-cycle's 0.95


@pytest.mark.parametrize(
    "change, message",
    [({"optimizer": "adagrad"}, "optimizer='adagrad'"), ({"schedule": "cosine"}, "schedule=")],
)
def test_an_unknown_optimizer_or_schedule_is_refused(change, message):
    with pytest.raises(ValueError, match=message):
        dl.Recipe("mlp", **change)
    with pytest.raises(ValueError, match=message):
        dl.Recipe("mlp").replace(**change)


@pytest.mark.parametrize("name", zoo.OPTIMIZERS)
def test_a_constant_recipe_equals_the_loop_written_by_hand(name, tiny_splits):
    """train_recipe == seed, fresh MLP, a torch optimizer, fit with the same seed: same weights."""
    wd = 0.01 if name == "adamw" else 0.0
    recipe = dl.Recipe("mlp", {"hidden": 16}, 2, 64, 0.01, wd, 3, name, "constant")
    trained = dl.train_recipe(recipe, tiny_splits)
    dl.seed_everything(3)
    model = dl.MLP(hidden=16)
    optimizer = TORCH_OPTIMIZERS[name](model.parameters(), 0.01, wd)
    history = dl.fit(model, tiny_splits, optimizer, num_epochs=2, batch_size=64, seed=3)
    assert history.val_acc == trained.history.val_acc
    assert history.train_loss == trained.history.train_loss
    for a, b in zip(model.state_dict().values(), trained.model.state_dict().values()):
        assert torch.equal(a, b)


def _fake_run(val_acc: float) -> SimpleNamespace:
    return SimpleNamespace(history=dl.History(val_acc=[0.1, val_acc]))


def test_search_lr_picks_the_best_final_validation_accuracy():
    scores = {0.1: 0.80, 0.01: 0.95, 0.001: 0.90}
    search = zoo.search_lr(lambda lr: _fake_run(scores[lr]), scores)
    assert search.val_acc == scores and list(search.runs) == [0.1, 0.01, 0.001]
    assert search.best_lr == 0.01 and search.best is search.runs[0.01]


def test_search_lr_scores_a_diverged_run_nan_and_goes_on():
    def train(lr):
        if lr > 0.5:
            raise FloatingPointError("training loss became NaN")
        return _fake_run(lr)

    search = zoo.search_lr(train, (0.1, 1.0, 0.2))
    assert search.runs[1.0] is None and math.isnan(search.val_acc[1.0])
    assert search.best_lr == 0.2  # NaN never wins


def test_search_lr_breaks_ties_by_grid_order():
    search = zoo.search_lr(lambda lr: _fake_run(0.9), (3e-3, 1e-3, 1e-2))
    assert search.best_lr == 3e-3
    search = zoo.search_lr(lambda lr: _fake_run(0.9 if lr < 0.1 else 0.5), (0.3, 0.02, 0.01))
    assert search.best_lr == 0.02


def test_search_lr_with_every_run_diverged():
    def diverge(lr):
        raise FloatingPointError

    search = zoo.search_lr(diverge, (0.1, 1.0))
    assert all(math.isnan(v) for v in search.val_acc.values())
    with pytest.raises(FloatingPointError, match="every learning rate"):
        _ = search.best


def test_search_lr_takes_a_score():
    search = zoo.search_lr(lambda lr: {"acc": 1 - lr}, (0.3, 0.1), score=lambda run: run["acc"])
    assert search.best_lr == 0.1 and search.best == {"acc": 0.9}


def test_lr_search_is_train_recipe_at_each_rate(tiny_splits):
    recipe = dl.Recipe("mlp", {"hidden": 16}, num_epochs=1, batch_size=64, seed=1)
    search = dl.lr_search(recipe, (1e-3, 1e-2), tiny_splits)
    for lr, run in search.runs.items():
        alone = dl.train_recipe(recipe.replace(lr=lr), tiny_splits)
        assert run.recipe.lr == lr and run.history.val_acc == alone.history.val_acc
        assert search.val_acc[lr] == alone.history.val_acc[-1]


def test_train_tensors_gives_train_recipes_weights(tiny_splits):
    recipe = SMALL["cnn"].replace(num_epochs=2)
    reference = zoo.train_recipe(recipe, tiny_splits).model  # validates after each epoch
    dl.seed_everything(recipe.seed)
    model = dl.build_model("cnn", **recipe.model_kwargs)
    trained = zoo.train_tensors(recipe, model, tiny_splits.X_train, tiny_splits.y_train, 0)
    assert not trained.training
    for a, b in zip(reference.state_dict().values(), trained.state_dict().values(), strict=True):
        assert torch.equal(a, b)
