"""Short training runs for ablations: early stopping on validation, fixed step budgets."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .data import MNISTSplits, iterate_batches
from .history import History
from .training import evaluate_tensors, train_one_epoch

Transform = Callable[[Tensor], Tensor]
EVAL_BATCH = 256  # on a CPU, faster per image than 1,024 (the activations stay in cache)


@dataclass
class Run:
    """A run's best-validation model (early stopping), its history and training seconds."""

    model: nn.Module  # the weights of the epoch with the best validation accuracy
    history: History
    best_epoch: int  # 1-based
    seconds: float  # training time only (validation not counted)
    last_state: dict = field(default_factory=dict)  # the weights after the last epoch run


def _augmented(batches, augment: Transform | None):
    for X, y in batches:
        yield (X if augment is None else augment(X)), y


def fit_early_stopping(
    model: nn.Module,
    data: MNISTSplits,
    *,
    num_epochs: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    seed: int = 0,
    patience: int | None = None,
    augment: Transform | None = None,
) -> Run:
    """AdamW at a constant rate; keep the weights of the best validation epoch.

    Stops after `patience` epochs without a better validation accuracy (None: never).
    `augment` transforms each training batch (data augmentation).
    """
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    history, best, best_epoch, seconds = History(), copy.deepcopy(model.state_dict()), 0, 0.0
    for epoch in range(num_epochs):
        torch.manual_seed(seed + epoch)  # dropout masks
        batches = iterate_batches(data.X_train, data.y_train, batch_size, True, seed + epoch)
        tic = time.perf_counter()
        loss = train_one_epoch(model, _augmented(batches, augment), optimizer)
        train_seconds = time.perf_counter() - tic
        seconds += train_seconds
        val_loss, val_acc = evaluate_tensors(model, data.X_val, data.y_val, EVAL_BATCH)
        history.append(loss, val_loss, val_acc, train_seconds)
        if val_acc > max(history.val_acc[:-1], default=-1.0):
            best, best_epoch = copy.deepcopy(model.state_dict()), epoch + 1
        elif patience is not None and epoch + 1 - best_epoch >= patience:
            break
    last = copy.deepcopy(model.state_dict())
    model.load_state_dict(best)
    return Run(model.eval(), history, best_epoch, seconds, last)


def train_steps(
    model: nn.Module,
    X: Tensor,
    y: Tensor,
    *,
    steps: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    seed: int = 0,
    params: list[nn.Parameter] | None = None,
) -> nn.Module:
    """A fixed number of AdamW steps on random batches of (X, y); returns the model in eval mode.

    `params`: the parameters to train (default: all of them).
    """
    params = list(model.parameters()) if params is None else params
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # dropout masks
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(X), (min(batch_size, len(X)),), generator=g).to(X.device)
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(X[idx]), y[idx]).backward()
        optimizer.step()
    return model.eval()
