"""All plotting of the book: each function takes data and `ax=None` and returns the Axes."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from torch import Tensor

from .data import MNIST_MEAN, MNIST_STD


def _axes(ax: Axes | None, figsize: tuple[float, float] = (6, 3.5)) -> Axes:
    return ax if ax is not None else plt.subplots(figsize=figsize, layout="constrained")[1]


def plot_learning_curves(histories: dict, ax: Axes | None = None, metric: str = "val_acc") -> Axes:
    """One line per run of a History field (e.g. 'val_acc', 'train_loss') against the epoch."""
    ax = _axes(ax)
    for label, history in histories.items():
        values = getattr(history, metric)
        ax.plot(range(1, len(values) + 1), values, marker="o", markersize=3, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric.replace("_", " "))
    ax.grid(alpha=0.3)
    ax.legend()
    return ax


def plot_losses(history, ax: Axes | None = None, title: str = "") -> Axes:
    """Training and validation loss of one History against the epoch."""
    ax = _axes(ax)
    epochs = range(1, history.num_epochs + 1)
    ax.plot(epochs, history.train_loss, marker="o", markersize=3, label="train loss")
    ax.plot(epochs, history.val_loss, marker="s", markersize=3, label="validation loss")
    ax.set(xlabel="epoch", ylabel="cross-entropy", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    return ax


def _pixels(X: Tensor) -> np.ndarray:
    """Normalized (N, 1, 28, 28) or raw (N, 28, 28) images -> (N, 28, 28) floats in [0, 1]."""
    X = X.detach().cpu().float()
    if X.ndim == 4:
        X = X[:, 0] * MNIST_STD + MNIST_MEAN
    elif X.max() > 1.5:
        X = X / 255.0
    return X.clamp(0, 1).numpy()


def plot_digits(X: Tensor, labels: Sequence[int], preds: Sequence[int] | None = None,
                ncols: int = 8, ax: Axes | None = None) -> Axes:
    """A grid of digits captioned with their labels, or 'true→predicted' when preds are given."""
    images = _pixels(X)  # (N, 28, 28)
    nrows = max(1, -(-len(images) // ncols))
    ax = _axes(ax, figsize=(ncols * 0.8, nrows * 1.0))
    W, H = 30, 40  # a 28x28 digit with a margin, and room for its caption below
    canvas = np.ones((nrows * H, ncols * W))
    for i, img in enumerate(images):
        r, c = divmod(i, ncols)
        canvas[r * H + 1:r * H + 29, c * W + 1:c * W + 29] = 1 - img  # dark ink on white
        text = f"{labels[i]}" if preds is None else f"{labels[i]}→{preds[i]}"
        ax.text(c * W + W / 2, r * H + 30, text, ha="center", va="top", fontsize=8,
                color="black" if preds is None else "crimson")
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    return ax


def plot_misclassified(X: Tensor, y: Tensor, preds: Tensor, max_images: int = 24,
                       ncols: int = 8, ax: Axes | None = None) -> Axes:
    """The first `max_images` misclassified digits, captioned true→predicted."""
    wrong = torch.nonzero(preds.cpu() != y.cpu()).flatten()[:max_images]
    return plot_digits(X[wrong.to(X.device)], y.cpu()[wrong].tolist(), preds.cpu()[wrong].tolist(),
                       ncols=ncols, ax=ax)


def plot_bars(values: dict[str, float], ylabel: str, ax: Axes | None = None, fmt: str = "{:.2f}") -> Axes:
    """A labelled bar chart of named values."""
    ax = _axes(ax, figsize=(5, 3))
    bars = ax.bar(list(values), list(values.values()), color=["tab:gray", "tab:blue", "tab:green"][:len(values)])
    ax.bar_label(bars, labels=[fmt.format(v) for v in values.values()])
    ax.set_ylabel(ylabel)
    ax.margins(y=0.15)
    return ax
