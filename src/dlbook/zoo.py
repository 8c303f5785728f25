"""The book's trained models: fixed recipes, trained once, cached in artifacts/, loaded anywhere."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch
from torch import Tensor, nn

from .checkpoint import CheckpointError, checkpoint_paths, load_model, save_checkpoint
from .data import MNIST_MEAN, MNIST_STD, MNISTSplits, load_mnist
from .history import History
from .models import build_model
from .runtime import artifacts_dir, seed_everything
from .training import evaluate_tensors, fit, train_seeded_epoch

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")  # momentum: SGD with momentum 0.9
SCHEDULES = ("onecycle", "constant")


@dataclass(frozen=True)
class Recipe:
    """Everything that determines a trained model: architecture, optimizer, schedule, data order."""

    model: str  # 'mlp' or 'cnn' (any name of models.MODELS)
    model_kwargs: dict = field(default_factory=dict)
    num_epochs: int = 5
    batch_size: int = 128
    lr: float = 3e-3  # the peak learning rate (one-cycle) or the learning rate (constant)
    weight_decay: float = 1e-4  # decoupled for AdamW; L2 added to the gradient for the others
    seed: int = 0
    optimizer: str = "adamw"  # one of OPTIMIZERS
    schedule: str = "onecycle"  # one of SCHEDULES; stepped once per batch

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer={self.optimizer!r}: choose one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule={self.schedule!r}: choose one of {', '.join(SCHEDULES)}")

    def replace(self, **changes: Any) -> Recipe:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


# The book's defaults; the MNIST chapter picks the MLP's learning rate on the validation split.
RECIPES = {
    "mlp": Recipe("mlp", {"hidden": 128}, num_epochs=15, lr=3e-3),
    "cnn": Recipe("cnn", {"c1": 32, "c2": 64}, num_epochs=5, lr=3e-3),
}


def make_optimizer(
    recipe: Recipe, model: nn.Module, steps_per_epoch: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None]:
    """The recipe's optimizer and, for one-cycle, its schedule (None: a constant rate).

    One-cycle also cycles momentum (Adam's beta1) between 0.95 and 0.85, except for plain SGD,
    which has none to cycle: it stays plain SGD.
    """
    params, lr, wd = model.parameters(), recipe.lr, recipe.weight_decay
    optimizer: torch.optim.Optimizer
    if recipe.optimizer == "adamw":
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    elif recipe.optimizer == "adam":
        optimizer = torch.optim.Adam(params, lr=lr, weight_decay=wd)
    else:
        momentum = 0.9 if recipe.optimizer == "momentum" else 0.0
        optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=wd)
    if recipe.schedule == "constant":
        return optimizer, None
    total = recipe.num_epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=total, cycle_momentum=recipe.optimizer != "sgd"
    )
    return optimizer, scheduler


@dataclass
class TrainedModel:
    """A trained model with its recipe, history and training wall time (no test score here)."""

    model: nn.Module
    recipe: Recipe
    history: History
    train_seconds: float


def train_recipe(
    recipe: Recipe,
    data: MNISTSplits,
    device: torch.device | str = "cpu",
    progress: bool = False,
    checkpoint: Path | None = None,
) -> TrainedModel:
    """Train a fresh model by the recipe, deterministically for a given device.

    The test set is not touched here: choices are made on the validation split, and the caller
    evaluates the chosen model on the test set once.
    """
    seed_everything(recipe.seed)
    model = build_model(recipe.model, **recipe.model_kwargs).to(device)
    steps = -(-len(data.X_train) // recipe.batch_size)  # ceil division
    optimizer, scheduler = make_optimizer(recipe, model, steps)
    tic = time.perf_counter()
    history = fit(
        model,
        data,
        optimizer,
        scheduler=scheduler,
        num_epochs=recipe.num_epochs,
        batch_size=recipe.batch_size,
        seed=recipe.seed,
        progress=progress,
        checkpoint=checkpoint,
        meta=_meta(recipe),
    )
    return TrainedModel(model, recipe, history, time.perf_counter() - tic)


def train_tensors(recipe: Recipe, model: nn.Module, X: Tensor, y: Tensor, seed: int) -> nn.Module:
    """Train `model` by `recipe` on any (X, y), without validation; returns it in eval mode.

    The same optimizer, schedule, epochs, batch size and per-epoch seeding as `train_recipe`
    (which also validates and checkpoints), so on the training split it gives the same weights.
    """
    steps = -(-len(X) // recipe.batch_size)  # ceil division
    optimizer, scheduler = make_optimizer(recipe, model, steps)
    for epoch in range(recipe.num_epochs):
        train_seeded_epoch(model, X, y, optimizer, recipe.batch_size, seed + epoch, scheduler)
    return model.eval()


def _meta(recipe: Recipe, **extra) -> dict:
    """JSON metadata saved beside the weights."""
    return {
        "recipe": dataclasses.asdict(recipe),
        "normalization": [MNIST_MEAN, MNIST_STD],
        "input_shape": [1, 28, 28],
        **extra,
    }


def save_trained(
    trained: TrainedModel, test_acc: float, path: Path | None = None, device: str = "cpu"
) -> Path:
    """Save a trained model's weights and metadata (test accuracy, history) to artifacts/."""
    path = path or artifacts_dir() / trained.recipe.model / "model"
    meta = _meta(
        trained.recipe,
        test_acc=test_acc,
        train_seconds=trained.train_seconds,
        trained_on=str(device),
        history=dataclasses.asdict(trained.history),
    )
    return save_checkpoint(path, trained.model, meta=meta)


def load_trained(path: Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a model from a saved checkpoint's recipe and load its weights."""
    model, record = load_model(
        path, lambda meta: build_model(meta["recipe"]["model"], **meta["recipe"]["model_kwargs"])
    )
    return model.to(device).eval(), record["meta"]


def trained_model(
    name: str,
    device: torch.device | str = "cpu",
    data: MNISTSplits | None = None,
    progress: bool = False,
) -> tuple[nn.Module, dict]:
    """The book's trained `name` model: from artifacts/ if cached, else trained now and cached."""
    if name not in RECIPES:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(RECIPES)}")
    path = artifacts_dir() / name / "model"
    if checkpoint_paths(path)[1].exists():
        try:
            return load_trained(path, device)
        except CheckpointError as err:
            print(f"ignoring the cached {name} ({err}); training it again")
    data = data if data is not None else load_mnist(device)
    trained = train_recipe(RECIPES[name], data, device, progress=progress)
    _, test_acc = evaluate_tensors(trained.model, data.X_test, data.y_test)
    save_trained(trained, test_acc, path, device=str(device))
    return load_trained(path, device)


R = TypeVar("R")


@dataclass
class LRSearch(Generic[R]):
    """The runs of a learning-rate grid, scored on the validation split (NaN: diverged)."""

    runs: dict[float, R | None]  # None where training diverged
    val_acc: dict[float, float]  # final validation accuracy of each run

    @property
    def best_lr(self) -> float:
        """The learning rate with the best validation accuracy (the first one on ties)."""
        return max(self.val_acc, key=lambda lr: _or(self.val_acc[lr], -1.0))

    @property
    def best(self) -> R:
        """The run at `best_lr`."""
        run = self.runs[self.best_lr]
        if run is None:
            raise FloatingPointError("every learning rate of the grid diverged")
        return run


def _or(value: float, fallback: float) -> float:
    return fallback if math.isnan(value) else value


def final_val_acc(run: Any) -> float:
    """The last validation accuracy of a run that has a `.history` (a TrainedModel)."""
    return run.history.val_acc[-1]


def search_lr(
    train: Callable[[float], R],
    lrs: Iterable[float],
    score: Callable[[R], float] = final_val_acc,
) -> LRSearch[R]:
    """Train once per learning rate, in grid order, and keep every run with its score.

    `train(lr)` raising FloatingPointError (the loss became NaN or infinite) marks a diverged
    run: it is kept as None with a NaN score, and the search goes on.
    """
    runs: dict[float, R | None] = {}
    val_acc: dict[float, float] = {}
    for lr in lrs:
        try:
            run = train(lr)
        except FloatingPointError:  # this rate is out
            runs[lr], val_acc[lr] = None, float("nan")
            continue
        runs[lr], val_acc[lr] = run, float(score(run))
    return LRSearch(runs, val_acc)


def lr_search(
    recipe: Recipe,
    lrs: Iterable[float],
    data: MNISTSplits,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> LRSearch[TrainedModel]:
    """`train_recipe` at each learning rate of the grid; choose by validation accuracy only."""
    return search_lr(lambda lr: train_recipe(recipe.replace(lr=lr), data, device, progress), lrs)
