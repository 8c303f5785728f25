"""The from-scratch MLP and optimizers against their references: autograd and torch.optim."""

from functools import partial

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest
import torch
import torch.nn.functional as F

import dlbook as dl

S = dl.scratch
F64 = torch.float64


def _batch(B: int, d_in: int, C: int, seed: int, dtype=F64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, d_in, generator=g, dtype=dtype), torch.randint(0, C, (B,), generator=g)


def _autograd_grads(params, X, y):
    """Reference: the same network through nn.functional and autograd."""
    leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
    Z1 = X.flatten(1) @ leaves["W1"] + leaves["b1"]
    logits = torch.relu(Z1) @ leaves["W2"] + leaves["b2"]
    loss = F.cross_entropy(logits, y)
    loss.backward()
    return loss.detach(), {k: v.grad for k, v in leaves.items()}


# --- forward and backward -------------------------------------------------------------------


@pytest.mark.parametrize("seed,B", [(0, 1), (1, 32), (2, 257)])
def test_manual_gradients_equal_autograd_in_float64(seed, B):
    params = S.init_mlp(seed=seed, dtype=F64)
    X, y = _batch(B, 784, 10, seed)
    loss, grads = S.loss_and_grads(params, X, y)
    ref_loss, ref = _autograd_grads(params, X, y)
    assert abs(loss - ref_loss) < 1e-12
    for k in S.PARAM_NAMES:
        assert grads[k].shape == params[k].shape
        assert (grads[k] - ref[k]).abs().max() < 1e-10, k


def test_gradients_match_nn_mlp_with_its_transposed_weights():
    model = dl.MLP().double()
    params = S.params_from_module(model)
    X, y = _batch(16, 784, 10, 3)
    F.cross_entropy(model(X.view(16, 1, 28, 28)), y).backward()
    fc1, fc2 = model.net[1], model.net[4]
    _, grads = S.loss_and_grads(params, X, y)
    torch.testing.assert_close(grads["W1"], fc1.weight.grad.T, rtol=0, atol=1e-12)
    torch.testing.assert_close(grads["W2"], fc2.weight.grad.T, rtol=0, atol=1e-12)
    torch.testing.assert_close(grads["b1"], fc1.bias.grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(grads["b2"], fc2.bias.grad, rtol=0, atol=1e-12)
    reloaded = S.load_into_module(params, dl.MLP().double())
    torch.testing.assert_close(reloaded(X), S.mlp_forward(params, X)[0])


def test_manual_backward_passes_finite_differences():
    params = S.init_mlp(12, 7, 4, seed=5, dtype=F64)
    X, y = _batch(6, 12, 4, 5)
    inputs = [params[k].clone().requires_grad_() for k in S.PARAM_NAMES]
    assert torch.autograd.gradcheck(
        lambda *p: S.ManualMLPLoss.apply(X, y, *p), inputs, eps=1e-6, atol=1e-7, rtol=1e-5
    )


def test_relu_derivative_at_zero_is_zero_like_pytorch():
    Z = torch.tensor([-1.0, 0.0, 2.0], dtype=F64, requires_grad=True)
    torch.relu(Z).sum().backward()
    assert S.relu_grad(Z.detach()).tolist() == Z.grad.tolist() == [0.0, 0.0, 1.0]


def test_cross_entropy_and_its_gradient_are_stable_for_huge_logits():
    logits = torch.tensor([[1000.0, 0.0, -1000.0], [0.0, 2000.0, 5.0]], dtype=F64)
    y = torch.tensor([2, 1])
    leaf = logits.clone().requires_grad_()
    ref = F.cross_entropy(leaf, y)
    ref.backward()
    assert torch.isfinite(S.cross_entropy(logits, y))
    torch.testing.assert_close(S.cross_entropy(logits, y), ref.detach())
    torch.testing.assert_close(S.cross_entropy_grad(logits, y), leaf.grad)
    torch.testing.assert_close(S.softmax(logits).sum(1), torch.ones(2, dtype=F64))


def test_bad_inputs_raise_value_errors_that_say_what_to_do():
    params = S.init_mlp(seed=0)
    with pytest.raises(ValueError, match="features"):
        S.mlp_forward(params, torch.zeros(2, 100))
    with pytest.raises(ValueError, match="class indices"):
        S.cross_entropy(torch.zeros(2, 10), torch.tensor([0, 10]))
    with pytest.raises(ValueError, match="class indices"):
        S.cross_entropy(torch.zeros(2, 10), torch.zeros(2, 10))
    with pytest.raises(ValueError, match="lr"):
        S.SGD([torch.zeros(2)], lr=0.0)
    with pytest.raises(ValueError, match="momentum"):
        S.Momentum([torch.zeros(2)], lr=0.1, momentum=1.0)
    with pytest.raises(ValueError, match="one gradient per parameter"):
        S.SGD([torch.zeros(2)], lr=0.1).step([])
    with pytest.raises(ValueError, match="unknown optimizer"):
        S.make_optimizer("adagrad", [torch.zeros(2)], lr=0.1)


# --- mini-batch gradients against the full gradient ---------------------------------------------


def test_full_gradient_is_autograds_gradient_over_the_whole_set_in_chunks():
    params = S.init_mlp(20, 8, 10, seed=0, dtype=F64)
    X, y = _batch(100, 20, 10, seed=3)
    _, reference = _autograd_grads(params, X, y)  # one pass over all 100 rows
    full = S.full_gradient(params, X, y, chunk=32)  # chunks of 32, 32, 32 and 4 rows
    assert full.shape == (sum(p.numel() for p in params.values()),)
    torch.testing.assert_close(full, S.flatten(reference))
    with pytest.raises(ValueError, match="as many labels"):
        S.full_gradient(params, X, y[:5])


def test_gradient_noise_against_the_slow_obvious_loop():
    params = S.init_mlp(20, 8, 10, seed=0, dtype=F64)
    X, y = _batch(200, 20, 10, seed=4)
    full = S.full_gradient(params, X, y)
    noise = S.gradient_noise(params, X, y, full, batch_size=10, counts=(1, 5, 50), seed=7)
    g = torch.Generator().manual_seed(7)  # the same draws, one autograd pass each
    draws = []
    for _ in range(50):
        idx = torch.randperm(200, generator=g)[:10]
        draws.append(S.flatten(_autograd_grads(params, X[idx], y[idx])[1]))
    errors = torch.stack([(d - full).norm() / full.norm() for d in draws])
    assert noise.batch_rel_error == pytest.approx(errors.square().mean().sqrt().item())
    for k in (1, 5, 50):
        mean_k = torch.stack(draws[:k]).mean(0)
        expected = ((mean_k - full).norm() / full.norm()).item()
        assert noise.mean_rel_error[k] == pytest.approx(expected)


def test_mini_batch_gradients_are_unbiased_and_average_out():
    params = S.init_mlp(20, 8, 10, seed=1, dtype=F64)
    X, y = _batch(500, 20, 10, seed=5)
    full = S.full_gradient(params, X, y)
    noise = S.gradient_noise(params, X, y, full, batch_size=8, counts=(1, 1000), seed=0)
    # Unbiased draws: the error of a mean of k shrinks like 1/sqrt(k) (here 1/31.6).
    assert noise.mean_rel_error[1000] < 2 * noise.batch_rel_error / 1000**0.5
    whole = S.gradient_noise(params, X, y, full, batch_size=500, counts=(3,), seed=0)
    assert whole.batch_rel_error < 1e-12 and whole.mean_rel_error[3] < 1e-12  # no randomness left
    with pytest.raises(ValueError, match="batch_size"):
        S.gradient_noise(params, X, y, full, batch_size=501, counts=(1,))


# --- optimizers -------------------------------------------------------------------------------


def _small_mlp() -> torch.nn.Module:
    """A 20-16-5 MLP in float64 (two nn.Linear layers), weights from S.init_mlp."""
    model = torch.nn.Sequential(torch.nn.Linear(20, 16), torch.nn.ReLU(), torch.nn.Linear(16, 5))
    return S.load_into_module(S.init_mlp(20, 16, 5, seed=7, dtype=F64), model.double())


def _trajectories(make_torch, make_scratch, steps: int = 100):
    """Parameters after every step of a torch.optim and a scratch optimizer on the same MLP loss."""
    X, y = _batch(64, 20, 5, 7)
    pairs = list(S.trajectories(make_torch, make_scratch, _small_mlp(), X, y, steps))
    return torch.stack([r for r, _ in pairs]), torch.stack([m for _, m in pairs])  # (steps, P)


# name: (torch.optim class, the scratch optimizer's name, the arguments both take)
CASES = {
    "sgd": (torch.optim.SGD, "sgd", {"lr": 0.1}),
    "momentum": (torch.optim.SGD, "momentum", {"lr": 0.05, "momentum": 0.9}),
    "adam": (torch.optim.Adam, "adam", {"lr": 0.01}),
    "adam_l2": (torch.optim.Adam, "adam", {"lr": 0.01, "betas": (0.8, 0.99), "weight_decay": 0.1}),
    "adamw": (torch.optim.AdamW, "adamw", {"lr": 0.01, "weight_decay": 0.1}),
}


def _pair(name: str):
    """(make_torch, make_scratch) of a case: each builds its optimizer from a parameter list."""
    torch_optimizer, kind, kwargs = CASES[name]
    return partial(torch_optimizer, **kwargs), partial(S.make_optimizer, kind, **kwargs)


@pytest.mark.parametrize("name", list(CASES))
def test_scratch_optimizers_reproduce_torch_optim_over_100_steps(name):
    ref, mine = _trajectories(*_pair(name))
    assert (ref[-1] - ref[0]).abs().max() > 1e-2  # the parameters really moved
    torch.testing.assert_close(mine, ref)


def test_dampened_momentum_equals_pytorchs_with_lr_times_one_minus_momentum():
    ref, mine = _trajectories(
        lambda p: torch.optim.SGD(p, lr=0.5 * (1 - 0.9), momentum=0.9),
        lambda p: S.DampenedMomentum(p, lr=0.5, momentum=0.9),
    )
    assert (ref[-1] - ref[0]).abs().max() > 1e-2
    torch.testing.assert_close(mine, ref)


def test_adam_without_bias_correction_does_not_match():
    ref, mine = _trajectories(
        lambda p: torch.optim.Adam(p, lr=0.01),
        lambda p: S.Adam(p, lr=0.01, bias_correction=False),
        steps=5,
    )
    with pytest.raises(AssertionError):
        torch.testing.assert_close(mine, ref)


def test_compare_trajectories_summarizes_the_trajectories():
    X, y = _batch(64, 20, 5, 7)
    for name in CASES:
        ref, mine = _trajectories(*_pair(name), steps=10)
        steps = S.trajectories(*_pair(name), _small_mlp(), X, y, 10)
        diff, matches = S.compare_trajectories(steps)
        assert diff == (ref - mine).abs().max().item() and matches, name
    no_correction = partial(S.Adam, lr=0.01, bias_correction=False)
    steps = S.trajectories(partial(torch.optim.Adam, lr=0.01), no_correction, _small_mlp(), X, y, 5)
    diff, matches = S.compare_trajectories(steps)
    assert diff > 1e-3 and not matches


def test_adams_first_step_moves_every_coordinate_by_lr():
    p = torch.tensor([1.0, -2.0, 3.0], dtype=F64)
    g = torch.tensor([0.5, -3.0, 1e-3], dtype=F64)
    S.Adam([p], lr=0.1).step([g])  # bias-corrected: m̂ = g, v̂ = g², so the step is lr sign(g)
    torch.testing.assert_close(p, torch.tensor([0.9, -1.9, 2.9], dtype=F64), rtol=0, atol=1e-6)


def test_adam_l2_and_adamw_decoupled_decay_differ_as_in_torch():
    wd = 0.1
    ref_adam, adam = _trajectories(
        lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=wd),
        lambda p: S.Adam(p, lr=0.01, weight_decay=wd),
    )
    ref_adamw, adamw = _trajectories(
        lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=wd),
        lambda p: S.AdamW(p, lr=0.01, weight_decay=wd),
    )
    assert (adam - adamw).abs().max() > 1e-3  # L2 through m and v is not decoupled decay
    torch.testing.assert_close(adam - adamw, ref_adam - ref_adamw)


def test_gradient_descent_on_the_quadratic_follows_the_closed_form():
    lr, steps = 0.035, 30  # stable below 2 / 50: y flips sign each step, x creeps
    path = S.optimize_path(S.quadratic_grad, (2.0, 1.0), lambda p: S.SGD(p, lr=lr), steps)
    t = torch.arange(steps + 1, dtype=F64)
    expected = torch.stack([2.0 * (1 - lr * 1.0) ** t, 1.0 * (1 - lr * 50.0) ** t], dim=1)
    assert path.shape == (steps + 1, 2)
    torch.testing.assert_close(path, expected)


@pytest.mark.parametrize(
    "f,grad", [(S.quadratic, S.quadratic_grad), (S.rosenbrock, S.rosenbrock_grad)]
)
def test_test_function_gradients_equal_autograd(f, grad):
    P = torch.randn(7, 2, dtype=F64, generator=torch.Generator().manual_seed(0)).requires_grad_()
    f(P).sum().backward()
    torch.testing.assert_close(grad(P.detach()), P.grad)


def test_best_path_keeps_the_lowest_finite_end_of_the_grid():
    lrs = [0.001, 0.035, 0.02, 0.5]  # 0.5 > 2 / 50: gradient descent diverges on the quadratic
    finals = {
        lr: S.quadratic(
            S.optimize_path(S.quadratic_grad, (2.0, 1.0), lambda p, lr=lr: S.SGD(p, lr), 300)[-1]
        )
        for lr in lrs
    }
    assert not torch.isfinite(finals[0.5])
    best = S.best_path(S.quadratic, S.quadratic_grad, (2.0, 1.0), 300, "sgd", lrs)
    assert best.lr == min(lrs[:3], key=lambda lr: finals[lr].item()) == 0.035
    assert best.value == finals[0.035].item() and best.path.shape == (301, 2)
    momentum = S.best_path(
        S.quadratic, S.quadratic_grad, (2.0, 1.0), 50, "momentum", lrs, momentum=0.5
    )
    assert momentum.value < S.quadratic(torch.tensor([2.0, 1.0], dtype=F64)).item()
    with pytest.raises(FloatingPointError, match="every learning rate"):
        S.best_path(S.quadratic, S.quadratic_grad, (2.0, 1.0), 300, "sgd", [0.5, 1.0])


def test_steps_to_finds_the_first_window_below_the_level():
    losses = [2.0] * 10 + [0.0] * 10
    # reference: the moving mean after step i (1-based) of the last 4 losses
    means = {i: sum(losses[i - 4 : i]) / 4 for i in range(4, len(losses) + 1)}
    assert S.steps_to(losses, 1.0, window=4) == min(i for i, m in means.items() if m < 1.0) == 13
    assert S.steps_to(losses, 0.0, window=4) is None  # never strictly below
    assert S.steps_to([0.1, 0.1], 0.3, window=3) is None  # fewer losses than one window


# --- training ----------------------------------------------------------------------------------


def test_scratch_fit_equals_dl_fit_with_torch_sgd(tiny_splits):
    model = dl.MLP()
    params = S.params_from_module(model)
    run = S.fit(
        params,
        S.SGD(list(params.values()), lr=0.05),
        tiny_splits,
        num_epochs=3,
        batch_size=50,
        seed=1,
    )
    history = dl.fit(
        model,
        tiny_splits,
        torch.optim.SGD(model.parameters(), lr=0.05),
        num_epochs=3,
        batch_size=50,
        seed=1,
    )
    assert len(run.step_losses) == 3 * 8 and run.history.num_epochs == 3
    assert run.history.train_loss[-1] < run.history.train_loss[0]
    for k, v in S.params_from_module(model).items():
        torch.testing.assert_close(run.params[k], v, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.tensor(run.history.val_acc), torch.tensor(history.val_acc))


def test_train_mlp_is_init_make_optimizer_and_fit(tiny_splits):
    run = S.train_mlp(
        0.01, tiny_splits, optimizer="momentum", num_epochs=2, batch_size=50, seed=3, momentum=0.5
    )
    params = S.init_mlp(seed=3)
    ref = S.fit(
        params,
        S.Momentum(list(params.values()), lr=0.01, momentum=0.5),
        tiny_splits,
        num_epochs=2,
        batch_size=50,
        seed=3,
    )
    assert run.step_losses == ref.step_losses and run.history.val_acc == ref.history.val_acc
    for k in S.PARAM_NAMES:
        assert torch.equal(run.params[k], ref.params[k])


def test_evaluate_counts_correct_predictions():
    params = S.init_mlp(4, 3, 2, seed=0, dtype=F64)
    X, y = _batch(10, 4, 2, 0)
    logits, _ = S.mlp_forward(params, X)
    loss, acc = S.evaluate(params, X, y, batch_size=3)
    assert acc == (logits.argmax(1) == y).double().mean().item()
    assert abs(loss - F.cross_entropy(logits, y).item()) < 1e-12


# --- plots -------------------------------------------------------------------------------------


def test_optimizer_paths_plot_one_line_per_path():
    paths = {"a": torch.zeros(5, 2), "b": torch.ones(300, 2)}
    ax = dl.plotting.plot_optimizer_paths(
        S.rosenbrock, paths, (-2, 2), (-1, 3), log_levels=True, minimum=(1, 1)
    )
    assert [line.get_label() for line in ax.lines] == ["a", "b", "minimum"]
    assert ax.lines[0].get_marker() == "o" and ax.lines[1].get_marker() in (None, "None", "")
    plt.close("all")


def test_loss_curves_smooth_with_a_moving_average():
    _, ax = plt.subplots()
    out = dl.plotting.plot_loss_curves({"x": [1.0, 3.0, 5.0, 7.0]}, ax=ax, smooth=2)
    assert out is ax
    assert list(ax.lines[0].get_xdata()) == [2, 3, 4]
    assert list(ax.lines[0].get_ydata()) == [2.0, 4.0, 6.0]
    with pytest.raises(ValueError, match="smooth"):
        dl.plotting.plot_loss_curves({"x": [1.0]}, smooth=0)
    plt.close("all")
