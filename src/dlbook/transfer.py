"""Transfer learning: label budgets, frozen features with a linear probe, fine-tuning, caching."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import cast

import torch
from torch import Tensor, nn

from .ablation import train_steps
from .checkpoint import CheckpointError, checkpoint_paths
from .data import MNISTSplits
from .models import CNN
from .runtime import artifacts_dir
from .training import evaluate_tensors
from .zoo import Recipe, load_trained, save_trained, train_recipe


def balanced_subset(y: Tensor, n: int, seed: int = 0, num_classes: int = 10) -> Tensor:
    """Indices of n labelled examples, n // num_classes of each class (all of y if n >= len(y))."""
    if n >= len(y):
        return torch.arange(len(y), device=y.device)
    g = torch.Generator().manual_seed(seed)
    per_class = n // num_classes
    picks = []
    for c in range(num_classes):
        idx = torch.nonzero(y.cpu() == c).flatten()
        picks.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    return torch.cat(picks).sort().values.to(y.device)


def steps_for(n: int, batch_size: int, epochs: int, min_steps: int, max_steps: int) -> int:
    """Optimizer steps for n examples: `epochs` passes, clipped to [min_steps, max_steps]."""
    return max(min_steps, min(max_steps, epochs * math.ceil(n / batch_size)))


@torch.no_grad()  # not inference_mode: a probe trains on these tensors
def conv_features(model: CNN, X: Tensor, batch_size: int = 256) -> Tensor:
    """The CNN's frozen convolutional features, flattened: (N, 1, 28, 28) -> (N, c2 * 49)."""
    model.eval()
    return torch.cat(
        [model.features(X[i : i + batch_size]).flatten(1) for i in range(0, len(X), batch_size)]
    )


def linear_probe(
    F_train: Tensor,
    y: Tensor,
    *,
    steps: int = 300,
    lr: float = 1e-2,
    weight_decay: float = 1e-4,
    batch_size: int = 256,
    seed: int = 0,
) -> nn.Linear:
    """Logistic regression on frozen features (N, D): a linear layer trained with AdamW."""
    torch.manual_seed(seed)
    probe = nn.Linear(F_train.shape[1], 10).to(F_train.device)
    train_steps(
        probe, F_train, y, steps=steps, batch_size=batch_size, lr=lr,
        weight_decay=weight_decay, seed=seed,
    )  # fmt: skip
    return probe


def with_new_head(model: CNN, seed: int = 0) -> CNN:
    """A copy of a trained CNN whose last layer is re-initialized for a new 10-class task."""
    torch.manual_seed(seed)
    new = copy.deepcopy(model)
    cast(nn.Linear, new.head[4]).reset_parameters()
    return new


def cached_model(
    name: str, recipe: Recipe, data: MNISTSplits, device: torch.device | str = "cpu"
) -> tuple[nn.Module, dict]:
    """The recipe trained on `data`, from artifacts/<name>/ if cached, else trained and cached."""
    path: Path = artifacts_dir() / name / "model"
    if checkpoint_paths(path)[1].exists():
        try:
            return load_trained(path, device)
        except CheckpointError as err:
            print(f"ignoring the cached {name} ({err}); training it again")
    trained = train_recipe(recipe, data, device)
    _, test_acc = evaluate_tensors(trained.model, data.X_test, data.y_test)
    save_trained(trained, test_acc, path, device=str(device))
    return load_trained(path, device)
