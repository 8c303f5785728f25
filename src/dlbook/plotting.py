"""All plotting of the book: each function takes data and `ax=None` and returns the Axes."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.ticker import NullFormatter
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


def plot_digits(
    X: Tensor,
    labels: Sequence[int],
    preds: Sequence[int] | None = None,
    ncols: int = 8,
    ax: Axes | None = None,
) -> Axes:
    """A grid of digits captioned with their labels, or 'true→predicted' when preds are given."""
    images = _pixels(X)  # (N, 28, 28)
    nrows = max(1, -(-len(images) // ncols))
    ax = _axes(ax, figsize=(ncols * 0.8, nrows * 1.0))
    W, H = 30, 40  # a 28x28 digit with a margin, and room for its caption below
    canvas = np.ones((nrows * H, ncols * W))
    for i, img in enumerate(images):
        r, c = divmod(i, ncols)
        canvas[r * H + 1 : r * H + 29, c * W + 1 : c * W + 29] = 1 - img  # dark ink on white
        text = f"{labels[i]}" if preds is None else f"{labels[i]}→{preds[i]}"
        ax.text(
            c * W + W / 2,
            r * H + 30,
            text,
            ha="center",
            va="top",
            fontsize=8,
            color="black" if preds is None else "crimson",
        )
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    return ax


def plot_misclassified(
    X: Tensor,
    y: Tensor,
    preds: Tensor,
    max_images: int = 24,
    ncols: int = 8,
    ax: Axes | None = None,
) -> Axes:
    """The first `max_images` misclassified digits, captioned true→predicted."""
    wrong = torch.nonzero(preds.cpu() != y.cpu()).flatten()[:max_images]
    return plot_digits(
        X[wrong.to(X.device)],
        y.cpu()[wrong].tolist(),
        preds.cpu()[wrong].tolist(),
        ncols=ncols,
        ax=ax,
    )


def plot_bars(
    values: dict[str, float], ylabel: str, ax: Axes | None = None, fmt: str = "{:.2f}"
) -> Axes:
    """A labelled bar chart of named values."""
    ax = _axes(ax, figsize=(5, 3))
    bars = ax.bar(
        list(values),
        list(values.values()),
        color=["tab:gray", "tab:blue", "tab:green"][: len(values)],
    )
    ax.bar_label(bars, labels=[fmt.format(v) for v in values.values()])
    ax.set_ylabel(ylabel)
    ax.margins(y=0.15)
    return ax


def plot_confusion_matrix(
    cm: Tensor, ax: Axes | None = None, title: str = "", class_names: Sequence[str] | None = None
) -> Axes:
    """A confusion-matrix heatmap (rows: true class, columns: predicted) with every count written.

    Colours follow log(1 + count), so the few off-diagonal errors stay visible beside the
    diagonal's thousands.
    """
    counts = np.asarray(cm.cpu() if isinstance(cm, Tensor) else cm)  # (C, C)
    C = len(counts)
    names = list(class_names) if class_names is not None else [str(i) for i in range(C)]
    ax = _axes(ax, figsize=(4.6, 4.2))
    ax.imshow(np.log1p(counts), cmap="Blues", interpolation="nearest")
    threshold = np.log1p(counts).max() / 2
    for i in range(C):
        for j in range(C):
            ax.text(
                j,
                i,
                str(int(counts[i, j])),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if np.log1p(counts[i, j]) > threshold else "black",
            )
    ax.set_xticks(range(C), names)
    ax.set_yticks(range(C), names)
    ax.set(xlabel="predicted class", ylabel="true class", title=title)
    return ax


def plot_roc_curves(
    curves: dict, ax: Axes | None = None, title: str = "", log: bool = False
) -> Axes:
    """ROC curves given as {label: (fpr, tpr)}, with the chance diagonal; `log`: both axes
    logarithmic from 1e-3, where an attack that is sure of a few examples shows."""
    ax = _axes(ax, figsize=(4.2, 4))
    for label, (fpr, tpr) in curves.items():
        ax.plot(np.asarray(fpr), np.asarray(tpr), label=label, lw=1.2)
    ax.plot([0, 1], [0, 1], ls=":", color="gray", lw=1, label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
    if log:
        ax.set(xscale="log", yscale="log", xlim=(1e-3, 1), ylim=(1e-3, 1))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax


def plot_roc_panels(curves: dict, title: str = "") -> tuple[Axes, Axes]:
    """The same ROC curves twice, side by side: linear axes, then logarithmic ones."""
    fig, (linear, log) = plt.subplots(1, 2, figsize=(8.4, 4), layout="constrained")
    plot_roc_curves(curves, linear, title=title)
    plot_roc_curves(curves, log, title=f"{title} (log scale)" if title else "log scale", log=True)
    return linear, log


def plot_pr_curves(
    curves: dict, ax: Axes | None = None, title: str = "", prevalence: float | None = None
) -> Axes:
    """Precision-recall curves given as {label: (recall, precision)}, drawn as steps."""
    ax = _axes(ax, figsize=(4.2, 4))
    for label, (recall, precision) in curves.items():
        ax.plot(
            np.asarray(recall), np.asarray(precision), label=label, lw=1.2, drawstyle="steps-post"
        )
    if prevalence is not None:  # what a classifier without skill reaches
        ax.axhline(prevalence, ls=":", color="gray", lw=1, label="chance (prevalence)")
    ax.set(xlabel="recall", ylabel="precision", title=title, ylim=(-0.02, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax


def plot_reliability_diagram(bins: dict, ax: Axes | None = None, title: str = "") -> Axes:
    """Accuracy against mean confidence of each non-empty bin, {label: ReliabilityBins}."""
    ax = _axes(ax, figsize=(4.2, 4))
    ax.plot([0, 1], [0, 1], ls=":", color="gray", lw=1, label="perfect calibration")
    for label, b in bins.items():
        filled = np.asarray(b.counts) > 0
        ax.plot(
            np.asarray(b.confidence)[filled],
            np.asarray(b.accuracy)[filled],
            marker="o",
            markersize=3,
            lw=1.2,
            label=f"{label} (ECE {b.ece:.4f})",
        )
    ax.set(
        xlabel="confidence (top-label probability)",
        ylabel="accuracy",
        title=title,
        xlim=(0, 1.01),
        ylim=(0, 1.01),
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax


def plot_robustness(
    levels: Sequence[float], accuracies: dict, xlabel: str, ax: Axes | None = None, title: str = ""
) -> Axes:
    """Accuracy against perturbation strength, one line per model: {label: accuracies}."""
    ax = _axes(ax, figsize=(4.5, 3.4))
    for label, accs in accuracies.items():
        ax.plot(list(levels), list(accs), marker="o", markersize=3, label=label)
    ax.set(xlabel=xlabel, ylabel="test accuracy", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax


def plot_optimizer_paths(
    f,
    paths: dict,
    xlim: tuple[float, float],
    ylim: tuple[float, float],
    ax: Axes | None = None,
    num_levels: int = 20,
    log_levels: bool = False,
    minimum: tuple[float, float] | None = None,
    title: str = "",
) -> Axes:
    """Contours of f (a function of (..., 2) tensors) and one line per optimizer path (N, 2)."""
    ax = _axes(ax, figsize=(5, 4))
    xs = torch.linspace(*xlim, 300, dtype=torch.float64)
    ys = torch.linspace(*ylim, 300, dtype=torch.float64)
    XX, YY = torch.meshgrid(xs, ys, indexing="xy")  # (300, 300) each
    values = f(torch.stack([XX, YY], dim=-1)).numpy()  # (300, 300)
    levels: int | np.ndarray = num_levels  # a count, or the contour values themselves
    if log_levels:
        low = max(float(values.min()), 1e-3)
        levels = np.logspace(np.log10(low), np.log10(float(values.max())), num_levels)
    ax.contour(XX.numpy(), YY.numpy(), values, levels=levels, colors="0.7", linewidths=0.6)
    for label, path in paths.items():
        P = np.asarray(path, dtype=float)  # (N, 2)
        ax.plot(
            P[:, 0],
            P[:, 1],
            marker="o" if len(P) <= 100 else None,
            markersize=2.5,
            linewidth=1.2,
            label=label,
        )
    if minimum is not None:
        ax.plot(
            *minimum, marker="*", color="black", markersize=11, linestyle="none", label="minimum"
        )
    ax.set(xlim=xlim, ylim=ylim, xlabel="x", ylabel="y", title=title)
    ax.legend(fontsize=8, loc="best")
    return ax


def plot_loss_curves(
    curves: dict,
    ax: Axes | None = None,
    smooth: int = 1,
    logy: bool = True,
    xlabel: str = "step",
    ylabel: str = "training loss",
    title: str = "",
) -> Axes:
    """One line per named sequence of losses, smoothed by a moving average over `smooth` points."""
    if smooth < 1:
        raise ValueError(f"smooth={smooth} must be an integer >= 1 (1 means no smoothing)")
    ax = _axes(ax)
    for label, values in curves.items():
        v = np.asarray(values, dtype=float)
        x = np.arange(1, len(v) + 1)
        if smooth > 1 and len(v) >= smooth:
            v = np.convolve(v, np.ones(smooth) / smooth, mode="valid")  # mean of the last `smooth`
            x = x[smooth - 1 :]
        ax.plot(x, v, linewidth=1.2, label=label)
    if logy:
        ax.set_yscale("log")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return ax


def plot_lr_sensitivity(
    scores: dict,
    ax: Axes | None = None,
    chosen: dict | None = None,
    ylabel: str = "validation accuracy",
    title: str = "",
) -> Axes:
    """Final score against learning rate (log x), one line per optimizer: {label: {lr: score}}."""
    ax = _axes(ax, figsize=(5, 3.5))
    for label, by_lr in scores.items():
        lrs = sorted(by_lr)
        (line,) = ax.plot(lrs, [by_lr[lr] for lr in lrs], marker="o", markersize=3, label=label)
        if chosen is not None and label in chosen:
            ax.plot(
                chosen[label],
                by_lr[chosen[label]],
                marker="*",
                markersize=11,
                color=line.get_color(),
                linestyle="none",
            )
    ax.set_xscale("log")
    ax.set(xlabel="learning rate", ylabel=ylabel, title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return ax


def plot_scaling(
    curves: dict,
    xlabel: str,
    ax: Axes | None = None,
    *,
    ylabel: str = "test error",
    title: str = "",
    points: dict | None = None,
) -> Axes:
    """Error against size on log-log axes: {label: (sizes, errors)} lines, and single points."""
    ax = _axes(ax, figsize=(5, 3.5))
    for label, (sizes, errors) in curves.items():
        ax.plot(list(sizes), list(errors), marker="o", markersize=3, label=label)
    for label, (size, error) in (points or {}).items():
        ax.plot(size, error, marker="s", markersize=6, linestyle="none", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return ax


def plot_step_gradients(gradients: dict, ax: Axes | None = None, title: str = "") -> Axes:
    """Gradient norm reaching each time step (log y), one line per model: {label: (T,) values}."""
    ax = _axes(ax, figsize=(5, 3.5))
    for label, values in gradients.items():
        v = np.asarray(values, dtype=float)
        ax.plot(np.arange(1, len(v) + 1), v, marker="o", markersize=3, label=label)
    ax.set_yscale("log")
    ax.set(xlabel="image row (time step)", ylabel="mean |d loss / d row|", title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return ax


def plot_log_bars(
    values: dict[str, float],
    xlabel: str,
    ax: Axes | None = None,
    fmt: str = "{:.2g}",
    title: str = "",
) -> Axes:
    """Horizontal bars on a log axis, first item on top, for values spanning many decades."""
    ax = _axes(ax, figsize=(5, 0.4 * len(values) + 1))
    names = list(values)[::-1]  # barh draws from the bottom up
    bars = ax.barh(names, [values[n] for n in names], color="tab:blue")
    ax.bar_label(bars, labels=[fmt.format(values[n]) for n in names], padding=3, fontsize=8)
    ax.set_xscale("log")
    ax.set_xlim(min(values.values()) / 3, max(values.values()) * 30)  # room for the labels
    ax.set(xlabel=xlabel, title=title)
    ax.grid(alpha=0.3, axis="x")
    return ax


def plot_grouped_bars(
    values: dict[str, dict[str, float]],
    ylabel: str,
    ax: Axes | None = None,
    *,
    log: bool = False,
    fmt: str = "{:.3g}",
    title: str = "",
) -> Axes:
    """Bars grouped on x, one colour per series, each written: {group: {series: value}}."""
    ax = _axes(ax, figsize=(5, 3.2))
    series = list(dict.fromkeys(s for by_series in values.values() for s in by_series))
    width = 0.8 / len(series)
    for i, name in enumerate(series):
        groups = [g for g in values if name in values[g]]
        x = [list(values).index(g) + (i - (len(series) - 1) / 2) * width for g in groups]
        heights = [values[g][name] for g in groups]
        bars = ax.bar(x, heights, width, label=name)
        ax.bar_label(bars, labels=[fmt.format(h) for h in heights], fontsize=7, padding=1)
    ax.set_xticks(range(len(values)), list(values))
    if log:
        ax.set_yscale("log")
    ax.margins(y=0.4 if log else 0.25)  # room for the legend above the bars
    ax.set(ylabel=ylabel, title=title)
    ax.grid(alpha=0.3, axis="y", which="both" if log else "major")
    ax.legend(fontsize=7, loc="upper left", ncols=2)
    return ax


def plot_accuracy_vs_cost(
    accuracy: dict[str, float],
    cost: dict[str, float],
    xlabel: str,
    ax: Axes | None = None,
    *,
    log_x: bool = True,
    title: str = "",
) -> Axes:
    """Test accuracy against one cost, one labelled point per model: {name: value} each."""
    ax = _axes(ax, figsize=(4, 3.4))
    for name, acc in accuracy.items():
        ax.plot(cost[name], acc, marker="o", markersize=6, linestyle="none", label=name)
        ax.annotate(name, (cost[name], acc), textcoords="offset points", xytext=(5, 4), fontsize=8)
    if log_x:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # decades only
    ax.margins(x=0.2, y=0.15)
    ax.set(xlabel=xlabel, ylabel="test accuracy", title=title)
    ax.grid(alpha=0.3, which="both")
    return ax


def _one_image(image: Tensor) -> np.ndarray:
    """One digit, normalized (1, H, W) or raw (H, W) as _pixels reads them -> (H, W) in [0, 1]."""
    return _pixels(image[None])[0]


def plot_image_rows(image: Tensor, ax: Axes | None = None, title: str = "") -> Axes:
    """One digit cut into its rows, drawn apart: the time steps of a recurrent reader."""
    img = 1 - _one_image(image)  # dark ink on white
    H, W = img.shape
    canvas = np.ones((2 * H - 1, W))  # a white line between consecutive rows
    canvas[::2] = img
    ax = _axes(ax, figsize=(2.6, 3.6))
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest", aspect="auto")
    steps = [1, 7, 14, 21, H]
    ax.set_yticks([2 * (t - 1) for t in steps], [f"t={t}" for t in steps], fontsize=8)
    ax.set_xticks([])
    ax.set(ylabel="time step (one row each)", xlabel=f"{W} pixels per step", title=title)
    return ax


def plot_image_patches(image: Tensor, patch: int, ax: Axes | None = None, title: str = "") -> Axes:
    """One digit cut into patch × patch squares, drawn apart and numbered: a ViT's tokens."""
    img = 1 - _one_image(image)  # dark ink on white
    n, gap = img.shape[0] // patch, 3  # a gap above each patch holds its token number
    canvas = np.ones((n * (patch + gap), n * patch + (n - 1) * gap))
    ax = _axes(ax, figsize=(3.4, 3.8))
    for r in range(n):
        for c in range(n):
            top, left = r * (patch + gap) + gap, c * (patch + gap)
            canvas[top : top + patch, left : left + patch] = img[
                r * patch : (r + 1) * patch, c * patch : (c + 1) * patch
            ]
            x, y = left + (patch - 1) / 2, top - (gap + 1) / 2
            ax.text(
                x, y, str(r * n + c + 1), fontsize=7, color="tab:blue", ha="center", va="center"
            )
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set(xlabel=f"{n * n} tokens of {patch}×{patch} = {patch * patch} pixels", title=title)
    return ax


def plot_stacked_shares(
    parts: dict[str, dict[str, float]],
    ax: Axes | None = None,
    *,
    total_fmt: Callable[[float], str] = str,
    xlabel: str = "share of the total",
    title: str = "",
) -> Axes:
    """Horizontal bars of 100%, one per item (first on top), split into its parts' shares, each
    bar's total written at its end with `total_fmt`: {item: {part: amount}}."""
    names = list(parts)[::-1]  # barh draws from the bottom up
    kinds = list(dict.fromkeys(k for by_kind in parts.values() for k in by_kind))
    ax = _axes(ax, figsize=(6, 0.45 * len(parts) + 1.2))
    left = np.zeros(len(names))
    for kind in kinds:
        shares = np.array([parts[n].get(kind, 0.0) / sum(parts[n].values()) for n in names])
        ax.barh(names, shares, left=left, label=kind)
        left += shares
    for i, name in enumerate(names):
        ax.text(1.02, i, total_fmt(sum(parts[name].values())), va="center", fontsize=8)
    ax.set_xlim(0, 1.2)
    ax.set_xticks([0, 0.25, 0.5, 0.75, 1], ["0%", "25%", "50%", "75%", "100%"])
    ax.set(xlabel=xlabel, title=title)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return ax


def plot_best_so_far(curves: dict, ax: Axes | None = None, title: str = "") -> Axes:
    """Best validation accuracy so far against epochs spent, one line per search."""
    ax = _axes(ax, figsize=(5, 3.4))
    for label, values in curves.items():
        ax.step(range(1, len(values) + 1), list(values), where="post", label=label)
    ax.set(xlabel="epochs spent", ylabel="best validation accuracy so far", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax


def plot_label_curves(
    labels: Sequence[int], accuracies: dict, ax: Axes | None = None, title: str = ""
) -> Axes:
    """Test accuracy against the number of labelled examples (log scale), one line per method."""
    ax = _axes(ax, figsize=(4.8, 3.4))
    for label, accs in accuracies.items():
        ax.plot(list(labels), list(accs), marker="o", markersize=4, label=label)
    ax.set_xscale("log")
    ax.set(xlabel="labelled training images", ylabel="test accuracy", title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return ax


def plot_privacy_utility(
    epsilons: Sequence[float],
    accuracy: Sequence[float],
    attack_auc: Sequence[float],
    baseline: tuple[float, float],
    ax: Axes | None = None,
) -> Axes:
    """Test accuracy and membership-inference AUC against epsilon (log scale), with the
    non-private model's (accuracy, AUC) as dashed lines."""
    ax = _axes(ax, figsize=(6, 3.5))
    ax.plot(epsilons, accuracy, marker="o", label="test accuracy (DP-SGD)")
    ax.axhline(baseline[0], ls="--", color="C0", lw=1, label="test accuracy, no privacy")
    ax.set(xscale="log", xlabel="privacy budget ε (δ = 1e-5)", ylabel="test accuracy")
    twin = ax.twinx()
    twin.plot(epsilons, attack_auc, marker="s", color="C3", label="attack AUC (DP-SGD)")
    twin.axhline(baseline[1], ls="--", color="C3", lw=1, label="attack AUC, no privacy")
    twin.set(ylabel="membership-inference AUC", ylim=(0.45, 0.6))
    lines = ax.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    return ax
