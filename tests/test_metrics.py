"""dlbook.metrics against scikit-learn (the test-only reference), on random data and edge cases."""

import math
import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from scipy import optimize, stats
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.preprocessing import label_binarize

import dlbook as dl

M = dl.metrics
C = 5
TOL = 1e-6


def _random(n: int = 300, seed: int = 0, ties: bool = False):
    """Labels, predictions (argmax of noisy probs) and probabilities of C classes."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(C, (n,), generator=g)
    signal = 1.5 * torch.nn.functional.one_hot(y, C)  # (n, C): the true class stands out a bit
    logits = torch.randn(n, C, generator=g, dtype=torch.float64) + signal
    probs = logits.softmax(1)
    if ties:  # coarse scores: many equal values, as from a quantized model
        probs = (probs * 4).round() + 0.1
        probs = probs / probs.sum(1, keepdim=True)
    return y, probs.argmax(1), probs


def _edge_cases():
    """(name, y_true, y_pred) pairs for the edge cases of the issue."""
    y = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 0])
    never_predicted = y.clone()
    never_predicted[never_predicted == 3] = 2  # class 3 is never predicted
    absent = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])  # class 3 and 4 absent from targets ...
    absent_pred = torch.tensor([0, 1, 4, 0, 2, 2, 3, 1])  # ... but 3 and 4 are predicted
    return [
        ("random", *_random()[:2]),
        ("never_predicted", y, never_predicted),
        ("absent_from_targets", absent, absent_pred),
        ("perfect", y, y.clone()),
        ("constant", y, torch.zeros_like(y)),
        ("single_sample", torch.tensor([2]), torch.tensor([3])),
    ]


EDGES = _edge_cases()
IDS = [case[0] for case in EDGES]


@pytest.mark.parametrize("name,y,pred", EDGES, ids=IDS)
def test_confusion_matrix_matches_sklearn(name, y, pred):
    ours = M.confusion_matrix(y, pred, num_classes=C)
    theirs = skm.confusion_matrix(y.numpy(), pred.numpy(), labels=range(C))
    assert ours.dtype == torch.int64 and np.array_equal(ours.numpy(), theirs)
    assert M.accuracy(y, pred) == pytest.approx(skm.accuracy_score(y, pred), abs=TOL)


@pytest.mark.parametrize("zero_division", [0.0, 1.0, float("nan")])
@pytest.mark.parametrize("average", [None, "macro", "micro", "weighted"])
@pytest.mark.parametrize("name,y,pred", EDGES, ids=IDS)
def test_precision_recall_f1_match_sklearn(name, y, pred, average, zero_division):
    ours = M.precision_recall_f1(
        y, pred, num_classes=C, average=average, zero_division=zero_division
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        theirs = skm.precision_recall_fscore_support(
            y.numpy(), pred.numpy(), labels=range(C), average=average, zero_division=zero_division
        )
    for mine, ref in zip((ours.precision, ours.recall, ours.f1), theirs[:3]):
        np.testing.assert_allclose(np.asarray(mine, dtype=float), ref, atol=TOL, equal_nan=True)
    assert np.array_equal(ours.support.numpy(), np.bincount(y.numpy(), minlength=C))


def test_zero_division_value_is_used_for_a_class_never_predicted():
    y, pred = torch.tensor([0, 1, 1]), torch.tensor([0, 0, 0])  # class 1 never predicted
    assert M.precision_recall_f1(y, pred, zero_division=1.0).precision[1] == 1.0
    assert M.precision_recall_f1(y, pred).precision[1] == 0.0
    assert math.isnan(M.precision_recall_f1(y, pred, zero_division=float("nan")).precision[1])


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("ties", [False, True])
def test_top_k_accuracy_matches_sklearn_including_ties(k, ties):
    y, _, probs = _random(seed=1, ties=ties)
    theirs = skm.top_k_accuracy_score(y.numpy(), probs.numpy(), k=k, labels=range(C))
    assert M.top_k_accuracy(y, probs, k=k) == pytest.approx(theirs, abs=TOL)


def test_top_k_ties_rank_the_larger_class_first():
    scores = torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0]])
    y = torch.tensor([0, 1])  # top-1 of both rows is class 1, as in scikit-learn
    assert M.top_k_accuracy(y, scores, k=1) == 0.5
    assert skm.top_k_accuracy_score(y.numpy(), scores.numpy(), k=1, labels=range(3)) == 0.5


@pytest.mark.parametrize("seed", [0, 1])
def test_log_loss_matches_sklearn(seed):
    y, _, probs = _random(seed=seed)
    theirs = skm.log_loss(y.numpy(), y_proba=probs.numpy(), labels=range(C))
    assert M.log_loss(y, probs) == pytest.approx(theirs, abs=TOL)


def test_log_loss_clips_zero_probabilities_like_sklearn():
    y = torch.tensor([0, 1, 2])
    probs = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # one certain miss
    theirs = skm.log_loss(y.numpy(), y_proba=probs.numpy(), labels=range(3))
    assert M.log_loss(y, probs) == pytest.approx(theirs, rel=1e-6)
    one = M.log_loss(torch.tensor([1]), torch.tensor([[0.2, 0.8]]))  # a single sample
    assert one == pytest.approx(-math.log(0.8))


@pytest.mark.parametrize("drop", [True, False])
@pytest.mark.parametrize("ties", [False, True])
def test_roc_curve_matches_sklearn(drop, ties):
    y, _, probs = _random(seed=2, ties=ties)
    yb, s = (y == 3), probs[:, 3]
    fpr, tpr, thr = M.roc_curve(yb, s, drop_intermediate=drop)
    ref = skm.roc_curve(yb.numpy(), s.numpy(), drop_intermediate=drop)
    for mine, theirs in zip((fpr, tpr, thr), ref):
        np.testing.assert_allclose(mine.numpy(), theirs, atol=TOL)
    assert M.roc_auc(yb, s) == pytest.approx(skm.roc_auc_score(yb.numpy(), s.numpy()), abs=TOL)


@pytest.mark.parametrize("ties", [False, True])
def test_precision_recall_curve_and_average_precision_match_sklearn(ties):
    y, _, probs = _random(seed=3, ties=ties)
    yb, s = (y == 1), probs[:, 1]
    for mine, theirs in zip(
        M.precision_recall_curve(yb, s), skm.precision_recall_curve(yb.numpy(), s.numpy())
    ):
        np.testing.assert_allclose(mine.numpy(), theirs, atol=TOL)
    theirs = skm.average_precision_score(yb.numpy(), s.numpy())
    assert M.average_precision(yb, s) == pytest.approx(theirs, abs=TOL)


def test_average_precision_is_stepwise_not_trapezoidal():
    yb, s = torch.tensor([1, 0, 1, 0]), torch.tensor([0.9, 0.8, 0.7, 0.1])
    # recall steps 0.5 at precision 1, then 0.5 at precision 2/3: AP = 0.5 + 1/3
    assert M.average_precision(yb, s) == pytest.approx(0.5 + 1 / 3, abs=1e-12)
    precision, recall, _ = M.precision_recall_curve(yb, s)
    assert M.trapezoid_area(recall, precision) != pytest.approx(M.average_precision(yb, s))


@pytest.mark.parametrize("average", [None, "macro", "weighted"])
@pytest.mark.parametrize("ties", [False, True])
def test_one_vs_rest_scores_match_sklearn(average, ties):
    y, _, probs = _random(seed=4, ties=ties)
    theirs = skm.roc_auc_score(
        y.numpy(), probs.numpy(), multi_class="ovr", average=average, labels=range(C)
    )
    np.testing.assert_allclose(M.roc_auc_ovr(y, probs, average=average), theirs, atol=TOL)
    onehot = label_binarize(y.numpy(), classes=range(C))
    theirs = skm.average_precision_score(onehot, probs.numpy(), average=average)
    np.testing.assert_allclose(M.average_precision_ovr(y, probs, average=average), theirs, atol=TOL)


def test_one_vs_rest_class_absent_from_targets_is_nan_and_left_out_of_the_macro():
    y, _, probs = _random(seed=5)
    keep = y != 2  # class 2 never occurs in the targets
    y, probs = y[keep], probs[keep]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        per_class = skm.roc_auc_score(
            y.numpy(), probs.numpy(), multi_class="ovr", average=None, labels=range(C)
        )
    ours = M.roc_auc_ovr(y, probs, average=None)
    assert math.isnan(ours[2]) and math.isnan(per_class[2])
    np.testing.assert_allclose(ours.numpy(), per_class, atol=TOL, equal_nan=True)
    assert M.roc_auc_ovr(y, probs) == pytest.approx(np.nanmean(per_class), abs=TOL)
    ap = M.average_precision_ovr(y, probs, average=None)
    assert math.isnan(ap[2]) and not torch.isnan(ap[[0, 1, 3, 4]]).any()


def test_ranking_metrics_of_perfect_constant_and_single_sample_scores():
    yb = torch.tensor([0, 1, 1, 0, 1])
    assert M.roc_auc(yb, yb.double()) == 1.0 and M.average_precision(yb, yb.double()) == 1.0
    constant = torch.full((5,), 0.3)
    assert M.roc_auc(yb, constant) == skm.roc_auc_score(yb.numpy(), constant.numpy()) == 0.5
    assert M.average_precision(yb, constant) == pytest.approx(
        skm.average_precision_score(yb.numpy(), constant.numpy()), abs=TOL
    )  # the prevalence
    assert math.isnan(M.roc_auc(torch.tensor([1]), torch.tensor([0.7])))
    assert M.average_precision(torch.tensor([1]), torch.tensor([0.7])) == 1.0
    with pytest.raises(ValueError, match="only one class"):
        M.roc_curve(torch.tensor([1, 1]), torch.tensor([0.2, 0.7]))


@pytest.mark.parametrize("num_bins", [5, 15])
def test_reliability_bins_match_sklearn_calibration_curve(num_bins):
    y, preds, probs = _random(n=500, seed=6)
    bins = M.reliability_bins(probs, y, num_bins=num_bins)
    confidence = probs.max(1).values.numpy()
    correct = (preds == y).numpy().astype(int)
    prob_true, prob_pred = calibration_curve(correct, confidence, n_bins=num_bins)
    filled = bins.counts > 0
    np.testing.assert_allclose(bins.accuracy[filled].numpy(), prob_true, atol=TOL)
    np.testing.assert_allclose(bins.confidence[filled].numpy(), prob_pred, atol=TOL)
    assert int(bins.counts.sum()) == len(y)
    ece = (
        np.bincount(
            np.searchsorted(np.linspace(0, 1, num_bins + 1)[1:-1], confidence), minlength=num_bins
        )[filled.numpy()]
        * np.abs(prob_true - prob_pred)
    ).sum()
    assert M.expected_calibration_error(probs, y, num_bins) == pytest.approx(ece / len(y), abs=TOL)


def test_reliability_bins_from_confidences_equal_those_from_probabilities():
    y, preds, probs = _random(n=200, seed=10)
    a = M.reliability_bins(probs, y, num_bins=7)
    b = M.reliability_bins_from(probs.max(1).values, preds == y, num_bins=7)
    assert torch.equal(a.counts, b.counts) and a.ece == b.ece
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        M.reliability_bins_from(torch.tensor([1.5]), torch.tensor([1]))


def test_ece_by_hand():
    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.3, 0.7], [0.4, 0.6]])
    y = torch.tensor([0, 1, 1, 1])  # bin (0.8, 0.9]: conf 0.9, acc 0.5; bin (0.6, 0.7]: 0.65, 1
    expected = (2 * abs(0.5 - 0.9) + 2 * abs(1.0 - 0.65)) / 4
    assert M.expected_calibration_error(probs, y, num_bins=10) == pytest.approx(expected)
    perfect = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert M.expected_calibration_error(perfect, torch.tensor([0, 1])) == 0.0


def test_temperature_minimizes_the_nll_like_scipy():
    g = torch.Generator().manual_seed(7)
    logits = 2 * torch.randn(4000, C, generator=g, dtype=torch.float64)
    y = torch.multinomial(logits.softmax(1), 1, generator=g)[:, 0]  # calibrated at T = 1
    overconfident = 3.0 * logits  # so the fitted temperature should be about 3

    def nll(t: float) -> float:
        return torch.nn.functional.cross_entropy(overconfident / t, y).item()

    ref = optimize.minimize_scalar(
        nll, bounds=(0.01, 100), method="bounded", options={"xatol": 1e-10}
    ).x
    T = M.fit_temperature(overconfident, y)
    assert pytest.approx(ref, rel=1e-4) == T and 2.5 < T < 3.5
    assert nll(T) <= nll(1.0)


def test_bootstrap_interval_is_seeded_percentile_and_about_the_binomial_width():
    y, preds, _ = _random(n=2000, seed=8)
    ci = M.bootstrap_ci(y, preds, num_bootstrap=400, seed=3)
    again = M.bootstrap_ci(y, preds, num_bootstrap=400, seed=3)
    assert torch.equal(ci.samples, again.samples)
    low, high = np.percentile(ci.samples.numpy(), [2.5, 97.5])
    assert (ci.low, ci.high) == pytest.approx((low, high), abs=1e-12)
    p = skm.accuracy_score(y.numpy(), preds.numpy())
    assert ci.estimate == pytest.approx(p) and ci.low < p < ci.high
    half_width = 1.96 * math.sqrt(p * (1 - p) / len(y))
    assert (ci.high - ci.low) / 2 == pytest.approx(half_width, rel=0.2)


def test_mcnemar_exact_by_hand_and_against_scipy():
    y = torch.zeros(20, dtype=torch.long)
    a = torch.zeros(20, dtype=torch.long)
    b = torch.zeros(20, dtype=torch.long)
    a[:9] = 1  # A wrong on 9 samples that B gets right
    b[9:10] = 1  # B wrong on 1 sample that A gets right
    a[10:12] = b[10:12] = 1  # both wrong on 2: concordant, ignored
    result = M.mcnemar_test(y, a, b)
    assert (result.a_only, result.b_only) == (1, 9)
    assert result.p_value == pytest.approx(2 * (1 + 10) / 2**10, abs=1e-15)  # 0.021484375
    assert result.p_value == pytest.approx(stats.binomtest(1, 10, 0.5).pvalue, abs=1e-12)
    chi2 = M.mcnemar_test(y, a, b, exact=False).p_value
    assert chi2 == pytest.approx(stats.chi2.sf((9 - 1 - 1) ** 2 / 10, df=1), abs=1e-12)
    assert M.mcnemar_test(y, a, a).p_value == 1.0


def test_bootstrap_interval_formats_as_estimate_and_interval():
    ci = M.BootstrapCI(0.98125, 0.97, 0.99, torch.zeros(1))
    assert f"{ci:.4f}" == "0.9812, 95% bootstrap interval [0.9700, 0.9900]"
    assert f"{ci:+.2f}" == "+0.98, 95% bootstrap interval [+0.97, +0.99]"
    y, preds, _ = _random(n=50, seed=2)
    assert f"{M.bootstrap_ci(y, preds, num_bootstrap=5, confidence=0.9):.1f}".count("90%") == 1


@pytest.mark.parametrize("seed", [0, 4])
def test_top_confusions_are_the_largest_off_diagonal_cells_in_row_major_ties(seed):
    y, preds, _ = _random(n=400, seed=seed, ties=True)
    cm = M.confusion_matrix(y, preds, C)
    cells = [(int(cm[t, p]), t, p) for t in range(C) for p in range(C) if t != p]
    cells.sort(key=lambda cell: -cell[0])  # stable: equal counts stay in row-major order
    # diagonal cells sort to the end of the flattened matrix as 0s; so do zero off-diagonals
    expected = [(t, p, n) for n, t, p in cells[:4]]
    assert M.top_confusions(cm, k=4) == expected
    tied = torch.tensor([[9, 2, 2], [2, 9, 0], [1, 0, 9]])
    assert M.top_confusions(tied, k=3) == [(0, 1, 2), (0, 2, 2), (1, 0, 2)]


@pytest.mark.parametrize("seed", [0, 1])
def test_binary_report_matches_sklearn(seed):
    y, _, probs = _random(n=500, seed=seed)
    y_true, y_pred = (y == 1), probs[:, 1] >= 0.3  # bool targets and decisions
    report = M.binary_report(y_true, y_pred)
    t, p = y_true.numpy(), y_pred.numpy()
    (_, fp), (_, tp) = skm.confusion_matrix(t, p)
    assert report == pytest.approx(
        {
            "accuracy": skm.accuracy_score(t, p),
            "precision": skm.precision_score(t, p),
            "recall": skm.recall_score(t, p),
            "F1": skm.f1_score(t, p),
            "found": tp,
            "false alarms": fp,
        },
        abs=1e-12,
    )
    never = M.binary_report(y_true, torch.zeros_like(y_true))  # "always no": zero division -> 0
    assert (never["precision"], never["recall"], never["found"]) == (0.0, 0.0, 0)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("target", [0.5, 0.9, 0.99, 1.0])
def test_threshold_for_recall_is_the_highest_score_reaching_the_target(ties, target):
    y, _, probs = _random(n=300, seed=5, ties=ties)
    y_true, scores = y == 2, probs[:, 2]

    def recall(t):
        return float(((scores >= t) & y_true).sum() / y_true.sum())

    expected = max(float(t) for t in scores.unique() if recall(t) >= target)
    threshold = M.threshold_for_recall(y_true, scores, target)
    assert threshold == expected and recall(threshold) >= target


def test_noisy_draws_the_same_noise_at_every_sigma_and_stays_in_range():
    X = torch.rand(4, 1, 28, 28)
    reference = torch.randn(X.shape, generator=torch.Generator().manual_seed(3))
    for sigma in (0.0, 0.2, 0.5):
        out = M.noisy(X, sigma, seed=3)
        assert torch.equal(out, (X + sigma * reference).clamp(0, 1))
        assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(M.noisy(X, 0.0), X)
    assert not torch.equal(M.noisy(X, 0.3, seed=0), M.noisy(X, 0.3, seed=1))


def test_rotated_turns_images_counter_clockwise_with_a_black_fill():
    X = torch.rand(3, 1, 28, 28)
    assert torch.allclose(M.rotated(X, 0), X, atol=1e-3)  # resampled on a grid: not exact
    assert torch.allclose(M.rotated(X, 90), torch.rot90(X, 1, dims=(2, 3)), atol=1e-3)
    for angle in (5, 30):  # torchvision's bilinear rotation with a scalar fill, unchanged
        reference = TF.rotate(X, angle, interpolation=TF.InterpolationMode.BILINEAR, fill=0.0)
        assert torch.equal(M.rotated(X, angle), reference)
    ones = M.rotated(torch.ones(1, 1, 28, 28), 45)
    assert ones[0, 0, 0, 0] == 0 and ones[0, 0, 14, 14] == pytest.approx(1)  # corners: fill
    quarter = torch.zeros(1, 1, 28, 28)
    quarter[..., :14, :14] = 1  # top-left quarter: the top-left of a standard image
    assert M.rotated(quarter, 90)[..., 14:, :14].sum() == pytest.approx(14 * 14)  # to bottom-left


def test_robustness_curve_is_the_accuracy_on_each_standardized_corrupted_copy():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, C))
    X, y = torch.rand(64, 1, 28, 28), torch.randint(C, (64,))

    def darker(X, level):
        return X * (1 - level)

    levels = (0.0, 0.5, 1.0)
    curve = M.robustness_curve(model, X, y, darker, levels, batch_size=16)
    with torch.no_grad():
        expected = [
            (model((darker(X, v) - dl.MNIST_MEAN) / dl.MNIST_STD).argmax(1) == y).double().mean()
            for v in levels
        ]
    assert curve == pytest.approx([float(e) for e in expected], abs=1e-12)
    assert len({*curve}) > 1  # the corruption changes the predictions


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: M.confusion_matrix(torch.tensor([0, 1]), torch.tensor([0])), "different lengths"),
        (lambda: M.confusion_matrix(torch.tensor([0.0, 1.0]), torch.tensor([0, 1])), "integer"),
        (lambda: M.confusion_matrix(torch.tensor([0, 5]), torch.tensor([0, 1]), 3), "num_classes"),
        (
            lambda: M.precision_recall_f1(torch.tensor([0]), torch.tensor([0]), average="mean"),
            "average must be",
        ),
        (
            lambda: M.precision_recall_f1(torch.tensor([0]), torch.tensor([0]), zero_division=2),
            "zero_division",
        ),
        (lambda: M.log_loss(torch.tensor([0]), torch.tensor([[0.5, 0.6]])), "sum to 1"),
        (lambda: M.log_loss(torch.tensor([0]), torch.tensor([[2.0, -1.0]])), r"\[0, 1\]"),
        (lambda: M.roc_auc(torch.tensor([0, 2]), torch.tensor([0.1, 0.2])), "0/1"),
        (lambda: M.top_k_accuracy(torch.tensor([0]), torch.tensor([0.1, 0.9]), k=1), "shape"),
        (lambda: M.bootstrap_ci(torch.tensor([0]), torch.tensor([0]), confidence=95), "confidence"),
        (
            lambda: M.threshold_for_recall(torch.tensor([0, 1]), torch.tensor([0.1, 0.9]), 0),
            "target_recall",
        ),
    ],
)
def test_bad_input_raises_a_clear_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.fixture
def close_figures():
    yield
    plt.close("all")


def test_metric_plots_return_their_axes(close_figures):
    y, preds, probs = _random(seed=9)
    cm = M.confusion_matrix(y, preds, C)
    ax = dl.plotting.plot_confusion_matrix(cm)
    assert ax.images[0].get_array().shape == (C, C)
    assert [t.get_text() for t in ax.texts][:2] == [str(int(cm[0, 0])), str(int(cm[0, 1]))]
    fpr, tpr, _ = M.roc_curve(y == 0, probs[:, 0])
    ax = dl.plotting.plot_roc_curves({"a": (fpr, tpr)})
    assert np.array_equal(ax.lines[0].get_xdata(), fpr.numpy())
    precision, recall, _ = M.precision_recall_curve(y == 0, probs[:, 0])
    ax = dl.plotting.plot_pr_curves({"a": (recall, precision)}, prevalence=0.2)
    assert np.array_equal(ax.lines[0].get_ydata(), precision.numpy())
    bins = M.reliability_bins(probs, y, num_bins=10)
    ax = dl.plotting.plot_reliability_diagram({"a": bins})
    filled = (bins.counts > 0).numpy()
    assert np.allclose(ax.lines[1].get_ydata(), bins.accuracy.numpy()[filled])
    ax = dl.plotting.plot_robustness(
        [0, 1, 2], {"a": [0.9, 0.8, 0.5], "b": [0.9, 0.9, 0.7]}, xlabel="noise"
    )
    assert [line.get_label() for line in ax.lines] == ["a", "b"]
