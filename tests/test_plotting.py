import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest
import torch

import dlbook as dl


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def _history():
    history = dl.History()
    for i in range(3):
        history.append(1.0 / (i + 1), 1.2 / (i + 1), 0.8 + i / 20, 0.5)
    return history


def test_learning_curves_draw_one_line_per_run():
    _, ax = plt.subplots()
    out = dl.plotting.plot_learning_curves({"a": _history(), "b": _history()}, ax=ax)
    assert out is ax and len(ax.lines) == 2
    assert list(ax.lines[0].get_ydata()) == _history().val_acc


def test_losses_plot_train_and_validation():
    ax = dl.plotting.plot_losses(_history(), title="t")
    assert [line.get_label() for line in ax.lines] == ["train loss", "validation loss"]


def test_digit_grid_captions():
    X = torch.randn(10, 1, 28, 28)
    ax = dl.plotting.plot_digits(X, list(range(10)), ncols=5)
    assert [t.get_text() for t in ax.texts] == [str(i) for i in range(10)]
    assert ax.images[0].get_array().shape == (2 * 40, 5 * 30)


def test_misclassified_grid_shows_only_errors():
    X = torch.randn(6, 1, 28, 28)
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    preds = torch.tensor([0, 7, 2, 3, 9, 5])
    ax = dl.plotting.plot_misclassified(X, y, preds)
    assert [t.get_text() for t in ax.texts] == ["1→7", "4→9"]


def test_bars_are_labelled():
    ax = dl.plotting.plot_bars({"slow": 2.0, "fast": 0.5}, "seconds")
    assert [t.get_text() for t in ax.texts] == ["2.00", "0.50"]


def test_scaling_plot_is_log_log_with_options_by_name():
    ax = dl.plotting.plot_scaling(
        {"mlp": ([100, 1000], [0.2, 0.1])}, "training images", points={"cnn": (1000, 0.05)}
    )
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")
    assert [line.get_label() for line in ax.lines] == ["mlp", "cnn"]
    with pytest.raises(TypeError):
        dl.plotting.plot_scaling({}, "x", None, "error")  # ylabel, title, points: by name only


def test_lr_sensitivity_marks_the_chosen_rate():
    ax = dl.plotting.plot_lr_sensitivity({"adam": {1e-2: 0.9, 1e-3: 0.95}}, chosen={"adam": 1e-3})
    assert list(ax.lines[0].get_xdata()) == [1e-3, 1e-2] and ax.get_xscale() == "log"
    assert list(ax.lines[1].get_xdata()) == [1e-3] and list(ax.lines[1].get_ydata()) == [0.95]
