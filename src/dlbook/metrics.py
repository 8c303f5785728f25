"""Evaluation metrics beyond accuracy, vectorized in torch.

Conventions (they match scikit-learn's unless a docstring says otherwise):

* Labels are integer tensors `y_true`, `preds` of shape (N,) with values in [0, num_classes);
  scores are `probs` (N, C) rows summing to 1, or one score per sample for binary curves.
* `confusion_matrix[i, j]` counts samples of true class i predicted as j.
* Zero division: a precision, recall or F1 whose denominator is 0 (a class never predicted, or
  absent from the targets) takes the value `zero_division` (0.0 by default, like scikit-learn's
  "warn" without the warning; 1.0 or NaN on request). NaN entries are left out of averages.
* Ranking metrics of a class absent from the targets (ROC AUC, average precision) are undefined:
  they are NaN per class and left out of the macro average (scikit-learn returns NaN for that
  macro average, and 0.0 for such a class's average precision).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction

import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from torch import Tensor, nn

from .data import MNIST_MEAN, MNIST_STD
from .models import predict

AVERAGES = (None, "macro", "micro", "weighted")
NUM_BINS = 15  # reliability-diagram bins, as in Guo et al. (2017)


def _float_dtype(device: torch.device) -> torch.dtype:
    """float64 where the device has it (not on MPS)."""
    return torch.float32 if device.type == "mps" else torch.float64


def _as_labels(y: Tensor, name: str) -> Tensor:
    """A 1-D integer tensor of labels >= 0, or a ValueError saying what is wrong."""
    y = torch.as_tensor(y)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D labels of shape (N,); got shape {tuple(y.shape)}")
    if y.dtype.is_floating_point or y.dtype.is_complex:
        raise ValueError(
            f"{name} must hold integer class labels; got dtype {y.dtype}. "
            "Pass logits.argmax(1) for predictions."
        )
    if len(y) == 0:
        raise ValueError(f"{name} is empty: metrics need at least one sample")
    if bool((y < 0).any()):
        raise ValueError(f"{name} holds negative labels; classes must be 0, 1, ..., C-1")
    return y.long()


def _pair(y_true: Tensor, y_pred: Tensor) -> tuple[Tensor, Tensor]:
    """Validated labels of equal length on the same device."""
    y_true, y_pred = _as_labels(y_true, "y_true"), _as_labels(y_pred, "y_pred")
    if len(y_true) != len(y_pred):
        raise ValueError(
            f"y_true and y_pred have different lengths ({len(y_true)} vs "
            f"{len(y_pred)}): pass one prediction per sample"
        )
    return y_true, y_pred.to(y_true.device)


def _num_classes(num_classes: int | None, *ys: Tensor) -> int:
    """`num_classes`, checked against the labels, or max label + 1 when None."""
    largest = max(int(y.max()) for y in ys) + 1
    if num_classes is None:
        return largest
    if largest > num_classes:
        raise ValueError(
            f"labels go up to {largest - 1} but num_classes={num_classes}; "
            "raise num_classes or fix the labels"
        )
    return num_classes


def _check_probs(probs: Tensor, n: int) -> Tensor:
    """(N, C) probabilities: in [0, 1], rows summing to 1 (within sqrt(eps) of the dtype)."""
    probs = torch.as_tensor(probs)
    if probs.ndim != 2 or len(probs) != n:
        raise ValueError(f"probs must have shape (N={n}, C); got {tuple(probs.shape)}")
    if not probs.dtype.is_floating_point:
        probs = probs.to(torch.float32)
    if bool((probs < 0).any()) or bool((probs > 1).any()):
        raise ValueError("probs must lie in [0, 1]: pass logits.softmax(1), not logits")
    tol = math.sqrt(torch.finfo(probs.dtype).eps)
    if not torch.allclose(probs.sum(1), torch.ones_like(probs[:, 0]), rtol=0, atol=tol):
        raise ValueError("each row of probs must sum to 1: pass logits.softmax(1)")
    return probs


def confusion_matrix(y_true: Tensor, y_pred: Tensor, num_classes: int | None = None) -> Tensor:
    """(C, C) int64 counts: row i = true class i, column j = predicted class j."""
    y_true, y_pred = _pair(y_true, y_pred)
    C = _num_classes(num_classes, y_true, y_pred)
    return torch.bincount(y_true * C + y_pred, minlength=C * C).reshape(C, C)


def top_confusions(cm: Tensor, k: int = 5) -> list[tuple[int, int, int]]:
    """The k largest off-diagonal entries of a (C, C) confusion matrix as (true, predicted, count).

    Largest first; ties keep row-major order (the smaller true class, then predicted class, first).
    """
    C = cm.shape[0]
    off = cm.clone()
    off.fill_diagonal_(0)  # only the mistakes
    counts, flat = torch.sort(off.flatten(), descending=True, stable=True)  # (C * C,)
    return [(int(i) // C, int(i) % C, int(n)) for i, n in zip(flat[:k], counts[:k])]


def accuracy(y_true: Tensor, y_pred: Tensor) -> float:
    """Fraction of samples whose prediction equals the label."""
    y_true, y_pred = _pair(y_true, y_pred)
    return (y_true == y_pred).to(_float_dtype(y_true.device)).mean().item()


def _divide(num: Tensor, den: Tensor, zero_division: float) -> Tensor:
    """num / den, with `zero_division` where den == 0."""
    out = num / den.clamp(min=1)
    return torch.where(den == 0, torch.full_like(out, zero_division), out)


def _average(values: Tensor, weights: Tensor | None) -> float:
    """Mean (weighted when given) over the entries that are not NaN; NaN if none is left."""
    keep = ~torch.isnan(values)
    if not bool(keep.any()):
        return float("nan")
    values = values[keep]
    if weights is None or float(weights[keep].sum()) == 0:
        return values.mean().item()
    weights = weights[keep].to(values.dtype)
    return ((values * weights).sum() / weights.sum()).item()


@dataclass(frozen=True)
class PRF:
    """Precision, recall and F1: (C,) tensors per class, or floats once averaged."""

    precision: Tensor | float
    recall: Tensor | float
    f1: Tensor | float
    support: Tensor  # (C,) number of true samples of each class


def precision_recall_f1(
    y_true: Tensor,
    y_pred: Tensor,
    num_classes: int | None = None,
    average: str | None = None,
    zero_division: float = 0.0,
) -> PRF:
    """Per-class precision, recall and F1, or their 'macro', 'micro' or 'weighted' average.

    F1 = 2 TP / (2 TP + FP + FN); a ratio with a zero denominator is `zero_division`.
    'macro' is the plain mean over classes, 'weighted' weights by support, 'micro' pools the
    counts (for single-label data all three micro scores equal accuracy).
    """
    if average not in AVERAGES:
        raise ValueError(f"average must be one of {AVERAGES}; got {average!r}")
    if not (
        zero_division in (0, 1) or (isinstance(zero_division, float) and math.isnan(zero_division))
    ):
        raise ValueError(f"zero_division must be 0.0, 1.0 or float('nan'); got {zero_division!r}")
    cm = confusion_matrix(y_true, y_pred, num_classes)
    dtype = _float_dtype(cm.device)
    tp = cm.diagonal().to(dtype)  # (C,)
    pred_sum, true_sum = cm.sum(0).to(dtype), cm.sum(1).to(dtype)  # (C,)
    support = cm.sum(1)
    if average == "micro":
        tp, pred_sum, true_sum = (v.sum(0, keepdim=True) for v in (tp, pred_sum, true_sum))
    precision = _divide(tp, pred_sum, zero_division)
    recall = _divide(tp, true_sum, zero_division)
    f1 = _divide(2 * tp, true_sum + pred_sum, zero_division)
    if average is None:
        return PRF(precision, recall, f1, support)
    weights = support if average == "weighted" else None
    return PRF(
        _average(precision, weights), _average(recall, weights), _average(f1, weights), support
    )


def top_k_accuracy(y_true: Tensor, scores: Tensor, k: int = 1) -> float:
    """Fraction of samples whose label is among the k highest scores.

    Ties are broken as scikit-learn does: among equal scores the larger class index ranks first.
    """
    y_true = _as_labels(y_true, "y_true")
    scores = torch.as_tensor(scores).to(y_true.device)
    if scores.ndim != 2 or len(scores) != len(y_true):
        raise ValueError(f"scores must have shape (N={len(y_true)}, C); got {tuple(scores.shape)}")
    if not k >= 1:
        raise ValueError(f"k must be >= 1; got {k}")
    _num_classes(scores.shape[1], y_true)
    true_score = scores.gather(1, y_true[:, None])  # (N, 1)
    index = torch.arange(scores.shape[1], device=scores.device)  # (C,)
    ahead = (scores > true_score) | ((scores == true_score) & (index > y_true[:, None]))  # (N, C)
    return (ahead.sum(1) < k).double().mean().item()


def log_loss(y_true: Tensor, probs: Tensor) -> float:
    """Mean -log p(true class); probs are clipped to [eps, 1 - eps] of their dtype first."""
    y_true = _as_labels(y_true, "y_true")
    probs = _check_probs(probs, len(y_true)).to(y_true.device)
    _num_classes(probs.shape[1], y_true)
    eps = torch.finfo(probs.dtype).eps
    p_true = probs.clamp(eps, 1 - eps).gather(1, y_true[:, None])[:, 0]  # (N,)
    return -p_true.to(_float_dtype(probs.device)).log().mean().item()


def _binary(y_true: Tensor, scores: Tensor) -> tuple[Tensor, Tensor]:
    """Validated 0/1 targets (N,) and scores (N,) on one device."""
    y_true, scores = torch.as_tensor(y_true), torch.as_tensor(scores)
    if y_true.ndim != 1 or scores.shape != y_true.shape:
        raise ValueError(
            f"y_true and scores must both have shape (N,); got "
            f"{tuple(y_true.shape)} and {tuple(scores.shape)}"
        )
    if len(y_true) == 0:
        raise ValueError("y_true is empty: curves need at least one sample")
    if not bool(((y_true == 0) | (y_true == 1)).all()):
        raise ValueError("binary targets must be 0/1 or bool: pass (y == positive_class)")
    if not bool(torch.isfinite(scores).all()):
        raise ValueError("scores contain NaN or infinity")
    return y_true.long(), scores.to(y_true.device)


def binary_clf_curve(y_true: Tensor, scores: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """False and true positive counts at each distinct score, used as threshold (descending).

    Tied scores form one threshold, as in scikit-learn: all samples at a threshold flip together.
    """
    y_true, scores = _binary(y_true, scores)
    order = torch.argsort(scores, descending=True, stable=True)
    scores, y_true = scores[order], y_true[order]
    distinct = torch.nonzero(scores[1:] != scores[:-1]).flatten()  # last index of each run
    last = torch.tensor([len(scores) - 1], device=scores.device)
    idx = torch.cat([distinct, last])
    tps = y_true.cumsum(0)[idx]
    fps = 1 + idx - tps
    return fps, tps, scores[idx]


def roc_curve(
    y_true: Tensor, scores: Tensor, drop_intermediate: bool = True
) -> tuple[Tensor, Tensor, Tensor]:
    """False positive rate, true positive rate and thresholds (the first one +inf).

    Needs both classes in `y_true` (a ValueError otherwise). `drop_intermediate` drops
    collinear points that do not change the curve, as scikit-learn does by default.
    """
    fps, tps, thresholds = binary_clf_curve(y_true, scores)
    if tps[-1] == 0 or fps[-1] == 0:
        raise ValueError(
            "a ROC curve needs positive and negative samples; y_true has only one "
            "class (use roc_auc, which returns NaN in that case)"
        )
    if drop_intermediate and len(fps) > 2:
        corner = (fps.diff(2) != 0) | (tps.diff(2) != 0)
        true = torch.ones(1, dtype=torch.bool, device=fps.device)
        keep = torch.cat([true, corner, true])
        fps, tps, thresholds = fps[keep], tps[keep], thresholds[keep]
    dtype = _float_dtype(fps.device)
    zero = torch.zeros(1, dtype=fps.dtype, device=fps.device)
    fps, tps = torch.cat([zero, fps]).to(dtype), torch.cat([zero, tps]).to(dtype)
    inf = torch.full((1,), math.inf, dtype=dtype, device=fps.device)
    return fps / fps[-1], tps / tps[-1], torch.cat([inf, thresholds.to(dtype)])


def trapezoid_area(x: Tensor, y: Tensor) -> float:
    """Area under the piecewise-linear curve through (x, y), x monotonic."""
    return torch.trapezoid(y, x).abs().item()


def roc_auc(y_true: Tensor, scores: Tensor) -> float:
    """Area under the ROC curve (ties count one half); NaN when y_true has a single class."""
    y_true, scores = _binary(y_true, scores)
    positives = int(y_true.sum())
    if positives in (0, len(y_true)):
        return float("nan")
    fpr, tpr, _ = roc_curve(y_true, scores)
    return trapezoid_area(fpr, tpr)


def precision_recall_curve(y_true: Tensor, scores: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Precision and recall by increasing threshold, ending at (recall 0, precision 1).

    As in scikit-learn: precision and recall have one more entry than thresholds. Needs at least
    one positive sample (recall is undefined otherwise; a ValueError).
    """
    fps, tps, thresholds = binary_clf_curve(y_true, scores)
    if tps[-1] == 0:
        raise ValueError(
            "a precision-recall curve needs at least one positive sample in y_true "
            "(use average_precision, which returns NaN in that case)"
        )
    dtype = _float_dtype(tps.device)
    precision = tps.to(dtype) / (tps + fps).to(dtype)  # tps + fps >= 1 at every threshold
    recall = tps.to(dtype) / tps[-1].to(dtype)
    one, zero = torch.ones(1, dtype=dtype, device=tps.device), torch.zeros_like(recall[:1])
    return (
        torch.cat([precision.flip(0), one]),
        torch.cat([recall.flip(0), zero]),
        thresholds.flip(0),
    )


def threshold_for_recall(y_true: Tensor, scores: Tensor, target_recall: float) -> float:
    """The highest threshold t whose decision `scores >= t` reaches a recall of `target_recall`.

    Needs at least one positive sample; t is one of the scores (the lowest one reaches recall 1).
    """
    if not 0 < target_recall <= 1:
        raise ValueError(f"target_recall must be in (0, 1]; got {target_recall}")
    _, recall, thresholds = precision_recall_curve(y_true, scores)  # recall[:-1] per threshold
    return thresholds[recall[:-1] >= target_recall].max().item()


def binary_report(y_true: Tensor, y_pred: Tensor) -> dict[str, float]:
    """Accuracy, precision, recall and F1 of the positive class, and the hits and false alarms.

    y_true and y_pred (N,) are 0/1 or bool; "found" counts true positives, "false alarms" false
    positives.
    """
    y_true, y_pred = y_true.long(), y_pred.long()
    cm = confusion_matrix(y_true, y_pred, num_classes=2)  # (2, 2)
    prf = precision_recall_f1(y_true, y_pred, num_classes=2)  # (2,) per class; 1 is positive
    precision, recall, f1 = (
        torch.as_tensor(v)[1].item() for v in (prf.precision, prf.recall, prf.f1)
    )
    return {
        "accuracy": accuracy(y_true, y_pred),
        "precision": precision,
        "recall": recall,
        "F1": f1,
        "found": int(cm[1, 1]),
        "false alarms": int(cm[0, 1]),
    }


def average_precision(y_true: Tensor, scores: Tensor) -> float:
    """Step-wise area under the PR curve, sum of (R_n - R_{n-1}) P_n; NaN without positives.

    Not the trapezoidal area (which is optimistic), as in scikit-learn's average_precision_score.
    """
    y_true, scores = _binary(y_true, scores)
    if int(y_true.sum()) == 0:
        return float("nan")
    precision, recall, _ = precision_recall_curve(y_true, scores)
    return max(0.0, -(recall.diff() * precision[:-1]).sum().item())


def _one_vs_rest(
    metric: Callable[[Tensor, Tensor], float], y_true: Tensor, probs: Tensor, average: str | None
) -> Tensor | float:
    """A binary ranking metric for each class against the rest, then averaged."""
    if average not in (None, "macro", "weighted"):
        raise ValueError(f"average must be None, 'macro' or 'weighted'; got {average!r}")
    y_true = _as_labels(y_true, "y_true")
    probs = _check_probs(probs, len(y_true)).to(y_true.device)
    C = probs.shape[1]
    _num_classes(C, y_true)
    per_class = torch.tensor(
        [metric(y_true == c, probs[:, c]) for c in range(C)], dtype=torch.float64
    )  # (C,) NaN where undefined
    if average is None:
        return per_class
    support = torch.bincount(y_true.cpu(), minlength=C)
    return _average(per_class, support if average == "weighted" else None)


def roc_auc_ovr(y_true: Tensor, probs: Tensor, average: str | None = "macro") -> Tensor | float:
    """One-vs-rest ROC AUC per class (NaN for a class absent from y_true), or its average."""
    return _one_vs_rest(roc_auc, y_true, probs, average)


def average_precision_ovr(
    y_true: Tensor, probs: Tensor, average: str | None = "macro"
) -> Tensor | float:
    """One-vs-rest average precision per class (NaN for a class absent from y_true), or mean."""
    return _one_vs_rest(average_precision, y_true, probs, average)


@dataclass(frozen=True)
class ReliabilityBins:
    """Top-label confidence bins of a reliability diagram (NaN means for empty bins)."""

    edges: Tensor  # (B + 1,) from 0 to 1
    confidence: Tensor  # (B,) mean confidence of the samples in each bin
    accuracy: Tensor  # (B,) fraction of them classified correctly
    counts: Tensor  # (B,) number of samples

    @property
    def ece(self) -> float:
        """Expected calibration error: sum over bins of (count / N) |accuracy - confidence|."""
        gap = (self.accuracy - self.confidence).abs().nan_to_num(0.0)
        return (gap * self.counts).sum().item() / self.counts.sum().item()


def reliability_bins_from(
    confidence: Tensor, correct: Tensor, num_bins: int = NUM_BINS
) -> ReliabilityBins:
    """Bin confidences (N,) in [0, 1] with 0/1 correctness (N,) into equal-width bins (lo, hi]."""
    confidence, correct = torch.as_tensor(confidence), torch.as_tensor(correct)
    if confidence.ndim != 1 or correct.shape != confidence.shape or len(confidence) == 0:
        raise ValueError(
            f"confidence and correct must both have shape (N,) with N >= 1; got "
            f"{tuple(confidence.shape)} and {tuple(correct.shape)}"
        )
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1; got {num_bins}")
    if bool(((confidence < 0) | (confidence > 1)).any()):
        raise ValueError("confidence must lie in [0, 1]: pass probs.max(1).values")
    dtype = _float_dtype(confidence.device)
    confidence, correct = confidence.to(dtype), correct.to(confidence.device, dtype)
    edges = torch.arange(num_bins + 1, dtype=dtype, device=confidence.device) * (1.0 / num_bins)
    edges[-1] = 1.0  # the same floats as numpy.linspace(0, 1, num_bins + 1)
    bins = torch.bucketize(confidence, edges[1:-1], right=False)  # (N,) in [0, B)
    counts = torch.bincount(bins, minlength=num_bins)  # (B,)
    zeros = torch.zeros(num_bins, dtype=dtype, device=confidence.device)
    conf_sum = zeros.index_add(0, bins, confidence)  # (B,)
    acc_sum = zeros.index_add(0, bins, correct)  # (B,)
    n, nan = counts.to(dtype).clamp(min=1), torch.full_like(zeros, float("nan"))
    return ReliabilityBins(
        edges.cpu(),
        torch.where(counts > 0, conf_sum / n, nan).cpu(),
        torch.where(counts > 0, acc_sum / n, nan).cpu(),
        counts.cpu(),
    )


def reliability_bins(probs: Tensor, y_true: Tensor, num_bins: int = NUM_BINS) -> ReliabilityBins:
    """Bin the top-label confidence of probs (N, C) into `num_bins` equal-width bins (lo, hi]."""
    y_true = _as_labels(y_true, "y_true")
    probs = _check_probs(probs, len(y_true)).to(y_true.device)
    confidence, preds = probs.max(1)  # (N,)
    return reliability_bins_from(confidence, preds == y_true, num_bins)


def expected_calibration_error(probs: Tensor, y_true: Tensor, num_bins: int = NUM_BINS) -> float:
    """ECE of the top-label confidence over `num_bins` equal-width bins."""
    return reliability_bins(probs, y_true, num_bins).ece


def fit_temperature(
    logits: Tensor, y_true: Tensor, low: float = 1e-2, high: float = 1e2, steps: int = 60
) -> float:
    """The temperature T > 0 minimizing the NLL of softmax(logits / T); fit it on validation.

    The NLL is convex in 1/T, so its derivative E_p[z] - z_y is increasing in 1/T and bisection
    (in log space, between `low` and `high`) finds the unique minimum deterministically.
    """
    y_true = _as_labels(y_true, "y_true")
    logits = torch.as_tensor(logits).to(y_true.device)
    if logits.ndim != 2 or len(logits) != len(y_true):
        raise ValueError(f"logits must have shape (N={len(y_true)}, C); got {tuple(logits.shape)}")
    logits = logits.to(_float_dtype(logits.device))
    z_true = logits.gather(1, y_true[:, None])[:, 0]  # (N,)

    def slope(beta: float) -> float:  # d NLL / d beta, beta = 1 / T
        probs = F.softmax(beta * logits, dim=1)
        return ((probs * logits).sum(1) - z_true).mean().item()

    lo, hi = math.log(1 / high), math.log(1 / low)  # log beta
    for _ in range(steps):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if slope(math.exp(mid)) < 0 else (lo, mid)
    return 1 / math.exp((lo + hi) / 2)


@dataclass(frozen=True)
class BootstrapCI:
    """A metric's value on the full sample and its percentile bootstrap interval."""

    estimate: float
    low: float
    high: float
    samples: Tensor  # (num_bootstrap,) the metric on each resample
    confidence: float = 0.95  # the interval's coverage

    def __format__(self, spec: str) -> str:
        """`f"{ci:.4f}"` -> "0.9812, 95% bootstrap interval [0.9785, 0.9838]"."""
        return (
            f"{self.estimate:{spec}}, {self.confidence:.0%} bootstrap interval "
            f"[{self.low:{spec}}, {self.high:{spec}}]"
        )


def bootstrap_ci(
    y_true: Tensor,
    y_pred: Tensor,
    metric: Callable = accuracy,
    num_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> BootstrapCI:
    """Percentile bootstrap interval: resample (y_true, y_pred) pairs with replacement.

    Resampling uses a seeded CPU `torch.Generator`, so the interval repeats exactly.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), e.g. 0.95; got {confidence}")
    if num_bootstrap < 1:
        raise ValueError(f"num_bootstrap must be >= 1; got {num_bootstrap}")
    y_true, y_pred = torch.as_tensor(y_true), torch.as_tensor(y_pred)
    if len(y_true) != len(y_pred) or len(y_true) == 0:
        raise ValueError(
            f"y_true and y_pred need the same, non-zero length; got {len(y_true)} and {len(y_pred)}"
        )
    g = torch.Generator().manual_seed(seed)
    n = len(y_true)
    samples = torch.empty(num_bootstrap, dtype=torch.float64)
    for b in range(num_bootstrap):
        idx = torch.randint(n, (n,), generator=g).to(y_true.device)
        samples[b] = metric(y_true[idx], y_pred[idx])
    alpha = (1 - confidence) / 2
    low, high = torch.quantile(samples, torch.tensor([alpha, 1 - alpha], dtype=torch.float64))
    return BootstrapCI(metric(y_true, y_pred), low.item(), high.item(), samples, confidence)


@dataclass(frozen=True)
class McNemarResult:
    """Counts of discordant pairs and the two-sided p-value of McNemar's test."""

    a_only: int  # samples model A gets right and model B gets wrong
    b_only: int  # samples model B gets right and model A gets wrong
    p_value: float


def mcnemar_test(
    y_true: Tensor, preds_a: Tensor, preds_b: Tensor, exact: bool = True
) -> McNemarResult:
    """McNemar's test that two classifiers have the same error rate on the same samples.

    Only discordant samples count. Exact: two-sided binomial test of min(a, b) out of a + b
    with p = 1/2 (p = 1 when there are none). Otherwise the chi-square approximation with
    continuity correction, (|a - b| - 1)^2 / (a + b), one degree of freedom.
    """
    y_true, preds_a = _pair(y_true, preds_a)
    _, preds_b = _pair(y_true, preds_b)
    right_a, right_b = preds_a == y_true, preds_b == y_true
    a, b = int((right_a & ~right_b).sum()), int((~right_a & right_b).sum())
    n = a + b
    if n == 0:
        return McNemarResult(a, b, 1.0)
    if exact:
        tail = Fraction(sum(math.comb(n, i) for i in range(min(a, b) + 1)), 2**n)
        return McNemarResult(a, b, float(min(Fraction(1), 2 * tail)))
    statistic = max(abs(a - b) - 1, 0) ** 2 / n
    return McNemarResult(a, b, math.erfc(math.sqrt(statistic / 2)))


# Robustness: accuracy on corrupted copies of the test images.


def noisy(X: Tensor, sigma: float, seed: int = 0) -> Tensor:
    """Pixels in [0, 1] plus Gaussian noise of standard deviation sigma, clipped to [0, 1].

    The noise is drawn from a CPU generator seeded with `seed`: the same draw at every sigma,
    so a curve over sigma changes only the noise's strength.
    """
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(X.shape, generator=g).to(X.device)  # same shape as X
    return (X + sigma * noise).clamp(0, 1)


def rotated(X: Tensor, angle: float) -> Tensor:
    """Images (N, 1, H, W) of pixels in [0, 1] rotated by `angle` degrees counter-clockwise.

    Bilinear interpolation; the corners that come into view are black (0), like the background.
    """
    bilinear = TF.InterpolationMode.BILINEAR
    return TF.rotate(X, angle, interpolation=bilinear, fill=[0.0])  # (N, 1, H, W)


def robustness_curve(
    model: nn.Module,
    X: Tensor,
    y: Tensor,
    corrupt: Callable[[Tensor, float], Tensor],
    levels: Sequence[float],
    batch_size: int = 1024,
) -> list[float]:
    """Accuracy of `model` on `corrupt(X, level)` for each level.

    X (N, 1, 28, 28) holds pixels in [0, 1]; each corrupted copy is standardized with
    MNIST_MEAN and MNIST_STD and moved to the model's device before the forward pass.
    """
    device = next(model.parameters()).device
    return [
        accuracy(
            y, predict(model, ((corrupt(X, level) - MNIST_MEAN) / MNIST_STD).to(device), batch_size)
        )
        for level in levels
    ]
