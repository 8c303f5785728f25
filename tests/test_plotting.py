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


def test_grouped_bars_draw_one_labelled_bar_per_group_and_series():
    values = {"MLP": {"eager": 0.1, "onnx": 0.05}, "CNN": {"eager": 0.6, "onnx": 0.2}}
    ax = dl.plotting.plot_grouped_bars(values, "ms", log=True, fmt="{:.2f}")
    assert len(ax.patches) == 4 and ax.get_yscale() == "log" and ax.get_ylabel() == "ms"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["MLP", "CNN"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["eager", "onnx"]
    assert sorted(t.get_text() for t in ax.texts) == ["0.05", "0.10", "0.20", "0.60"]


def test_accuracy_vs_cost_draws_one_labelled_point_per_model():
    acc = {"MLP": 0.97, "CNN": 0.99, "RNN": 0.95}
    ax = dl.plotting.plot_accuracy_vs_cost(acc, {"MLP": 2e5, "CNN": 8e6, "RNN": 1e6}, "FLOPs")
    assert len(ax.lines) == 3 and [t.get_text() for t in ax.texts] == ["MLP", "CNN", "RNN"]
    assert list(ax.lines[1].get_xdata()) == [8e6] and list(ax.lines[1].get_ydata()) == [0.99]
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_xscale()) == ("FLOPs", "test accuracy", "log")


def test_image_rows_show_every_row_apart():
    image = torch.rand(28, 28)  # raw pixels in [0, 1]
    ax = dl.plotting.plot_image_rows(image)
    canvas = ax.images[0].get_array()
    assert canvas.shape == (2 * 28 - 1, 28)
    assert (canvas[1::2] == 1).all()  # a white line between consecutive rows
    assert torch.allclose(torch.as_tensor(canvas[::2]), 1 - image.double())
    assert ax.get_yticklabels()[0].get_text() == "t=1" and "time step" in ax.get_ylabel()


def test_image_patches_are_numbered_tokens():
    X = torch.randn(1, 28, 28)  # a normalized image, as the chapters hold it
    ax = dl.plotting.plot_image_patches(X, patch=7)
    assert [t.get_text() for t in ax.texts] == [str(i) for i in range(1, 17)]
    assert ax.images[0].get_array().shape == (4 * (7 + 3), 4 * 7 + 3 * 3)
    assert "16 tokens of 7×7" in ax.get_xlabel()


def test_stacked_shares_fill_each_bar_and_write_its_total():
    parts = {"small": {"weights": 1.0, "activations": 3.0}, "big": {"weights": 10.0}}
    ax = dl.plotting.plot_stacked_shares(parts, total_fmt="{:g} B".format)
    assert len(ax.patches) == 4  # one segment per item and part, zero-width ones included
    ends = [p.get_x() + p.get_width() for p in ax.patches]
    assert max(ends) == 1.0 and sorted(t.get_text() for t in ax.texts) == ["10 B", "4 B"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["weights", "activations"]
    assert ax.get_xlabel() == "share of the total"


def test_best_so_far_draws_one_step_line_per_search():
    ax = dl.plotting.plot_best_so_far({"grid": [0.5, 0.7, 0.7], "optuna": [0.6, 0.6, 0.8]})
    assert [line.get_label() for line in ax.lines] == ["grid", "optuna"]
    assert list(ax.lines[1].get_ydata()) == [0.6, 0.6, 0.8]
    assert ax.get_xlabel() == "epochs spent"


def test_label_curves_use_a_log_axis_of_labels():
    ax = dl.plotting.plot_label_curves([100, 1000], {"scratch": [0.5, 0.8], "probe": [0.6, 0.7]})
    assert len(ax.lines) == 2 and ax.get_xscale() == "log"
    assert list(ax.lines[0].get_xdata()) == [100, 1000]


def test_plot_privacy_utility():
    import matplotlib.pyplot as plt

    from dlbook.plotting import plot_privacy_utility

    ax = plot_privacy_utility([1, 3, 8], [0.97, 0.98, 0.985], [0.5, 0.5, 0.51], (0.99, 0.52))
    assert ax.get_xscale() == "log" and len(ax.get_lines()) == 2
    plt.close("all")


def test_roc_curves_on_log_axes():
    fpr, tpr = torch.tensor([0.0, 0.001, 0.01, 1.0]), torch.tensor([0.0, 0.02, 0.1, 1.0])
    ax = dl.plotting.plot_roc_curves({"attack": (fpr, tpr)}, log=True)
    assert ax.get_xscale() == ax.get_yscale() == "log" and ax.get_xlim() == (1e-3, 1)
    assert len(ax.lines) == 2  # the curve and chance
    plt.close(ax.figure)


def test_roc_panels_draw_linear_and_log_axes_of_one_figure():
    curves = {"a": (torch.tensor([0.0, 0.01, 1.0]), torch.tensor([0.0, 0.3, 1.0]))}
    linear, log = dl.plotting.plot_roc_panels(curves, title="MIA")
    assert linear.figure is log.figure and linear.get_xscale() == "linear"
    assert log.get_xscale() == "log" and log.get_title() == "MIA (log scale)"
    plt.close(linear.figure)
