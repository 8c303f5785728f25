"""Training as plain functions: one epoch, evaluation, and `fit` with checkpoints and resume."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm  # plain text bars: no widget state in stored outputs

from .checkpoint import load_training_state, save_checkpoint
from .data import MNISTSplits, iterate_batches
from .history import History

Batches = Iterable[tuple[Tensor, Tensor]]


def train_one_epoch(
    model: nn.Module,
    batches: Batches,
    optimizer: torch.optim.Optimizer,
    device: torch.device | str | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    progress: bool = False,
) -> float:
    """One pass in pytorch/examples' order; returns the mean training loss per sample."""
    model.train()
    total, count = 0.0, 0
    for X, y in tqdm(batches, disable=not progress, leave=False, mininterval=1.0, desc="train"):
        if device is not None:
            X, y = X.to(device), y.to(device)
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(X), y)  # mean over the batch
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()  # per-step schedules such as OneCycleLR
        total += loss.item() * len(y)
        count += len(y)
    if not math.isfinite(total):
        raise FloatingPointError("training loss became NaN or infinite: lower the learning rate")
    return total / count


def train_seeded_epoch(
    model: nn.Module,
    X: Tensor,
    y: Tensor,
    optimizer: torch.optim.Optimizer,
    batch_size: int,
    seed: int,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    progress: bool = False,
) -> float:
    """One epoch as `fit` runs it: the shuffle and torch's RNG (dropout) both seeded by `seed`."""
    torch.manual_seed(seed)
    batches = iterate_batches(X, y, batch_size, shuffle=True, seed=seed)
    return train_one_epoch(model, batches, optimizer, scheduler=scheduler, progress=progress)


@torch.inference_mode()
def evaluate(
    model: nn.Module, batches: Batches, device: torch.device | str | None = None
) -> tuple[float, float]:
    """Mean cross-entropy per sample and accuracy (a fraction) over all batches."""
    model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    for X, y in batches:
        if device is not None:
            X, y = X.to(device), y.to(device)
        logits = model(X)  # (B, 10)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        count += len(y)
    return loss_sum / count, correct / count


def evaluate_tensors(
    model: nn.Module, X: Tensor, y: Tensor, batch_size: int = 1024
) -> tuple[float, float]:
    """`evaluate` on preloaded tensors."""
    return evaluate(model, iterate_batches(X, y, batch_size))


def fit(
    model: nn.Module,
    data: MNISTSplits,
    optimizer: torch.optim.Optimizer,
    *,
    num_epochs: int,
    batch_size: int,
    seed: int = 0,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    progress: bool = False,
    checkpoint: Path | str | None = None,
    resume: bool = False,
    meta: dict | None = None,
) -> History:
    """Train on data.X_train, validate after each epoch; returns the History.

    Epoch e shuffles with seed + e and reseeds torch's RNG (dropout) with seed + e, so a run
    resumed from the checkpoint written after any epoch equals an uninterrupted run.
    With `checkpoint`, model, optimizer, scheduler and history are saved after every epoch.
    """

    history, start = History(), 0
    if resume and checkpoint is not None and Path(checkpoint).with_suffix(".json").exists():
        record, start = load_training_state(checkpoint, model, optimizer, scheduler)
        history = History.from_dict(record)
    bar = tqdm(range(start, num_epochs), disable=not progress, desc="epochs", mininterval=1.0)
    for epoch in bar:
        tic = time.perf_counter()
        train_loss = train_seeded_epoch(
            model,
            data.X_train,
            data.y_train,
            optimizer,
            batch_size,
            seed + epoch,
            scheduler,
            progress,
        )
        seconds = time.perf_counter() - tic
        val_loss, val_acc = evaluate_tensors(model, data.X_val, data.y_val)
        history.append(train_loss, val_loss, val_acc, seconds)
        bar.set_postfix(loss=f"{train_loss:.3f}", val_acc=f"{val_acc:.4f}")
        if checkpoint is not None:
            save_checkpoint(
                checkpoint,
                model,
                meta=meta,
                optimizer=optimizer,
                scheduler=scheduler,
                history=history.to_dict(),
            )
    return history
