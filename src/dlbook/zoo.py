"""The book's trained models: fixed recipes, trained once, cached in artifacts/, loaded anywhere."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .checkpoint import CheckpointError, checkpoint_paths, load_model, save_checkpoint
from .data import MNIST_MEAN, MNIST_STD, MNISTSplits, load_mnist
from .models import build_model
from .runtime import artifacts_dir, seed_everything
from .training import History, evaluate_tensors, fit


@dataclass(frozen=True)
class Recipe:
    """Everything that determines a trained model: architecture, optimizer, schedule, data order."""

    model: str  # 'mlp' or 'cnn'
    model_kwargs: dict = field(default_factory=dict)
    num_epochs: int = 5
    batch_size: int = 128
    lr: float = 3e-3  # peak learning rate of the one-cycle schedule
    weight_decay: float = 1e-4  # AdamW's decoupled weight decay
    seed: int = 0

    def replace(self, **changes) -> Recipe:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


# The book's defaults; the MNIST chapter picks the MLP's learning rate on the validation split.
RECIPES = {
    "mlp": Recipe("mlp", {"hidden": 128}, num_epochs=15, lr=3e-3),
    "cnn": Recipe("cnn", {"c1": 32, "c2": 64}, num_epochs=5, lr=3e-3),
}


def make_optimizer(recipe: Recipe, model: nn.Module, steps_per_epoch: int):
    """AdamW with a one-cycle learning-rate schedule stepped once per batch."""
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=recipe.lr, total_steps=recipe.num_epochs * steps_per_epoch
    )
    return optimizer, scheduler


@dataclass
class TrainedModel:
    """A trained model with its recipe, history and training wall time (no test score: see below)."""

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
