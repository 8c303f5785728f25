"""From scratch: the MLP's forward and backward pass without autograd, and optimizers written out.

Row convention throughout: a batch X is (B, features) and a linear layer is Z = X @ W + b with
W of shape (in, out), so the weight gradient of a batch is X.T @ delta. Nothing here calls
autograd, except the reference side of `trajectories`; the tests and the math chapter
check every function against autograd and torch.optim.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .data import MNISTSplits, iterate_batches
from .history import History

Params = dict[str, Tensor]
PARAM_NAMES = ("W1", "b1", "W2", "b2")


# ---------------------------------------------------------------------------------------------
# The MLP, forward and backward, with plain tensor operations
# ---------------------------------------------------------------------------------------------


def init_mlp(
    in_features: int = 784,
    hidden: int = 128,
    out_features: int = 10,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> Params:
    """Weights of an in-hidden-out MLP, uniform in ±1/sqrt(fan_in) like nn.Linear's default."""
    g = torch.Generator().manual_seed(seed)

    def uniform(shape: tuple[int, ...], fan_in: int) -> Tensor:
        U = torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1  # in [-1, 1)
        return (U / math.sqrt(fan_in)).to(dtype=dtype, device=device)

    return {
        "W1": uniform((in_features, hidden), in_features),  # (784, 128)
        "b1": uniform((hidden,), in_features),  # (128,)
        "W2": uniform((hidden, out_features), hidden),  # (128, 10)
        "b2": uniform((out_features,), hidden),
    }  # (10,)


def params_from_module(model: torch.nn.Module) -> Params:
    """Copy the weights of a dl.MLP (nn.Linear stores W as (out, in)) into the row convention."""
    fc1, fc2 = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    rows = torch.contiguous_format  # row-major (in, out), as init_mlp makes them
    return {
        "W1": fc1.weight.detach().T.clone(memory_format=rows),
        "b1": fc1.bias.detach().clone(),
        "W2": fc2.weight.detach().T.clone(memory_format=rows),
        "b2": fc2.bias.detach().clone(),
    }


@torch.no_grad()
def load_into_module(params: Params, model: torch.nn.Module) -> torch.nn.Module:
    """Write row-convention weights into a dl.MLP; returns the model."""
    fc1, fc2 = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    fc1.weight.copy_(params["W1"].T), fc1.bias.copy_(params["b1"])
    fc2.weight.copy_(params["W2"].T), fc2.bias.copy_(params["b2"])
    return model


def linear(X: Tensor, W: Tensor, b: Tensor) -> Tensor:
    """Z = X W + b: (B, in) @ (in, out) + (out,) -> (B, out)."""
    return X @ W + b


def linear_backward(
    X: Tensor, W: Tensor, delta: Tensor, need_dX: bool = True
) -> tuple[Tensor | None, Tensor, Tensor]:
    """Gradients (dX, dW, db) of a linear layer from delta = dL/dZ (B, out); dX only if needed."""
    dX = delta @ W.T if need_dX else None  # (B, out) @ (out, in) -> (B, in)
    dW = X.T @ delta  # (in, B) @ (B, out) -> (in, out): a sum over the batch
    db = delta.sum(0)  # (out,)
    return dX, dW, db


def relu(Z: Tensor) -> Tensor:
    """max(Z, 0), elementwise."""
    return Z.clamp_min(0)


def relu_grad(Z: Tensor) -> Tensor:
    """dReLU/dZ: 1 where Z > 0, else 0 (at Z = 0 we choose 0, as PyTorch does)."""
    return (Z > 0).to(Z.dtype)


def log_softmax(logits: Tensor) -> Tensor:
    """log softmax over the last axis, stable: the row maximum is subtracted first."""
    shifted = logits - logits.amax(dim=-1, keepdim=True)  # (B, C), every entry <= 0
    return shifted - shifted.exp().sum(dim=-1, keepdim=True).log()


def softmax(logits: Tensor) -> Tensor:
    """Probabilities (B, C) from logits (B, C)."""
    return log_softmax(logits).exp()


def _check_labels(logits: Tensor, y: Tensor) -> None:
    """Raise a ValueError unless y holds one class index in [0, C) per row of logits."""
    if logits.ndim != 2 or y.shape != logits.shape[:1]:
        raise ValueError(
            f"expected logits (B, C) and labels (B,) of class indices; got "
            f"{tuple(logits.shape)} and {tuple(y.shape)}"
        )
    integer = y.dtype in (torch.int64, torch.int32)
    if not integer or (len(y) and (y.min() < 0 or y.max() >= logits.shape[1])):
        raise ValueError(
            f"labels must be integer class indices in [0, {logits.shape[1]}); "
            "pass the class numbers, not one-hot vectors or floats"
        )


def one_hot(y: Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """(B,) class indices -> (B, num_classes) rows of zeros with a one at the label."""
    Y = torch.zeros(len(y), num_classes, dtype=dtype, device=y.device)  # (B, C)
    return Y.scatter_(1, y[:, None].long(), 1)


def cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    """Mean over the batch of -log softmax(logits)[label] (a scalar), as F.cross_entropy."""
    _check_labels(logits, y)
    return -log_softmax(logits).gather(1, y[:, None].long()).mean()


def cross_entropy_grad(logits: Tensor, y: Tensor) -> Tensor:
    """dL/dlogits of the mean cross-entropy: (softmax - one-hot) / B, shape (B, C)."""
    _check_labels(logits, y)
    return (softmax(logits) - one_hot(y, logits.shape[1], logits.dtype)) / len(y)


def mlp_forward(params: Params, X: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """Logits (B, 10) of a batch, and the cache the backward pass needs."""
    X = X.flatten(1)  # (B, 1, 28, 28) -> (B, 784)
    if X.shape[1] != params["W1"].shape[0]:
        raise ValueError(
            f"the batch has {X.shape[1]} features per example but W1 expects "
            f"{params['W1'].shape[0]}; pass images (B, 1, 28, 28) or rows (B, 784)"
        )
    Z1 = linear(X, params["W1"], params["b1"])  # (B, 128)
    A1 = relu(Z1)  # (B, 128)
    logits = linear(A1, params["W2"], params["b2"])  # (B, 10)
    return logits, {"X": X, "Z1": Z1, "A1": A1}


def mlp_backward(params: Params, cache: dict[str, Tensor], logits: Tensor, y: Tensor) -> Params:
    """Gradients of the mean cross-entropy for W1, b1, W2, b2: the chain rule, no autograd."""
    delta2 = cross_entropy_grad(logits, y)  # (B, 10) = dL/dZ2
    dA1, dW2, db2 = linear_backward(cache["A1"], params["W2"], delta2)  # (B, 128), (128, 10), (10,)
    assert dA1 is not None  # need_dX defaults to True
    delta1 = dA1 * relu_grad(cache["Z1"])  # (B, 128) = dL/dZ1
    _, dW1, db1 = linear_backward(cache["X"], params["W1"], delta1, need_dX=False)  # (784, 128)
    return {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2}


def loss_and_grads(params: Params, X: Tensor, y: Tensor) -> tuple[Tensor, Params]:
    """Mean cross-entropy of a batch and its gradients, from one forward and one backward pass."""
    logits, cache = mlp_forward(params, X)
    return cross_entropy(logits, y), mlp_backward(params, cache, logits, y)


class ManualMLPLoss(torch.autograd.Function):
    """The MLP's loss as an autograd Function whose backward is mlp_backward (for gradcheck)."""

    @staticmethod
    def forward(
        ctx, X: Tensor, y: Tensor, W1: Tensor, b1: Tensor, W2: Tensor, b2: Tensor
    ) -> Tensor:
        params = {"W1": W1, "b1": b1, "W2": W2, "b2": b2}
        logits, cache = mlp_forward(params, X)
        ctx.save_for_backward(*cache.values(), logits, y, W1, W2)
        return cross_entropy(logits, y)

    @staticmethod
    def backward(ctx, grad_loss: Tensor):
        X, Z1, A1, logits, y, W1, W2 = ctx.saved_tensors
        grads = mlp_backward({"W1": W1, "W2": W2}, {"X": X, "Z1": Z1, "A1": A1}, logits, y)
        return (None, None, *(grad_loss * grads[k] for k in PARAM_NAMES))


# ---------------------------------------------------------------------------------------------
# What is random in SGD: mini-batch gradients against the full gradient
# ---------------------------------------------------------------------------------------------


def flatten(tensors: Params) -> Tensor:
    """W1, b1, W2, b2 (weights or their gradients) as one vector, in PARAM_NAMES order."""
    return torch.cat([tensors[k].flatten() for k in PARAM_NAMES])


def full_gradient(params: Params, X: Tensor, y: Tensor, chunk: int = 8192) -> Tensor:
    """Gradient of the mean cross-entropy over all of (X, y), one vector; `chunk` rows at a time."""
    if len(X) == 0 or len(X) != len(y) or chunk < 1:
        raise ValueError(f"need as many labels as images (got {len(X)}, {len(y)}) and chunk >= 1")
    total = torch.zeros(sum(p.numel() for p in params.values()), dtype=X.dtype, device=X.device)
    for start in range(0, len(X), chunk):
        yb = y[start : start + chunk]
        _, grads = loss_and_grads(params, X[start : start + chunk], yb)
        total += flatten(grads) * len(yb)  # a chunk's mean gradient times its size: its sum
    return total / len(X)


class GradientNoise(NamedTuple):
    """Mini-batch gradients measured against the full gradient g, relative to |g|."""

    batch_rel_error: float  # root mean square over the draws of |g_batch - g| / |g|
    mean_rel_error: dict[int, float]  # k -> |mean of the first k batch gradients - g| / |g|


def gradient_noise(
    params: Params,
    X: Tensor,
    y: Tensor,
    full: Tensor,
    batch_size: int,
    counts: Sequence[int],
    seed: int = 0,
) -> GradientNoise:
    """Draw max(counts) random mini-batches (like SGD's: no image twice in one) and compare."""
    if not counts or min(counts) < 1 or not 1 <= batch_size <= len(X):
        raise ValueError(f"need counts >= 1 and 1 <= batch_size <= {len(X)}")
    g = torch.Generator().manual_seed(seed)
    norm, running = full.norm(), torch.zeros_like(full)
    squares, means = 0.0, {}
    for k in range(1, max(counts) + 1):
        idx = torch.randperm(len(X), generator=g)[:batch_size].to(X.device)  # (batch_size,)
        grad = flatten(loss_and_grads(params, X[idx], y[idx])[1])
        running += grad
        squares += ((grad - full).norm() / norm).item() ** 2
        if k in counts:
            means[k] = ((running / k - full).norm() / norm).item()
    return GradientNoise(math.sqrt(squares / max(counts)), means)


# ---------------------------------------------------------------------------------------------
# Optimizers: the update rules, written out
# ---------------------------------------------------------------------------------------------


def _check_hyper(
    name: str, value: float, low: float, high: float = math.inf, low_open: bool = False
) -> None:
    """Raise a ValueError naming a hyperparameter that is outside its range."""
    ok = math.isfinite(value) and (value > low if low_open else value >= low) and value < high
    if not ok:
        left = "(" if low_open else "["
        raise ValueError(f"{name}={value!r} is out of range: it must lie in {left}{low}, {high})")


class Optimizer:
    """Updates a list of tensors in place from a list of gradients, one `step` at a time."""

    def __init__(self, params: Sequence[Tensor], lr: float) -> None:
        _check_hyper("lr", lr, 0.0, low_open=True)
        self.params, self.lr, self.t = list(params), float(lr), 0
        self.state: list[dict[str, Tensor]] = [{} for _ in self.params]

    @torch.no_grad()
    def step(self, grads: Sequence[Tensor]) -> None:
        """Apply one update; grads[i] is the gradient of params[i]."""
        if len(grads) != len(self.params):
            raise ValueError(
                f"got {len(grads)} gradients for {len(self.params)} parameters; "
                "pass one gradient per parameter, in the same order"
            )
        self.t += 1
        for p, g, state in zip(self.params, grads, self.state):
            if g.shape != p.shape:
                raise ValueError(
                    f"gradient of shape {tuple(g.shape)} for a parameter of shape {tuple(p.shape)}"
                )
            self.update(p, g, state)

    def update(self, p: Tensor, g: Tensor, state: dict[str, Tensor]) -> None:
        """Update one parameter in place (subclasses define the rule)."""
        raise NotImplementedError


class SGD(Optimizer):
    """Plain gradient descent: p <- p - lr g."""

    def update(self, p: Tensor, g: Tensor, state: dict[str, Tensor]) -> None:
        p.sub_(self.lr * g)


class Momentum(Optimizer):
    """Heavy ball, PyTorch's convention: v <- mu v + g (v_1 = g); p <- p - lr v."""

    def __init__(self, params: Sequence[Tensor], lr: float, momentum: float = 0.9) -> None:
        super().__init__(params, lr)
        _check_hyper("momentum", momentum, 0.0, 1.0)
        self.momentum = momentum

    def update(self, p: Tensor, g: Tensor, state: dict[str, Tensor]) -> None:
        v = state.setdefault("v", torch.zeros_like(p))
        v.mul_(self.momentum).add_(g)
        p.sub_(self.lr * v)


class DampenedMomentum(Momentum):
    """The textbook's dampened form (a running average): v <- b v + (1 - b) g; p <- p - lr v."""

    def update(self, p: Tensor, g: Tensor, state: dict[str, Tensor]) -> None:
        v = state.setdefault("v", torch.zeros_like(p))
        v.mul_(self.momentum).add_((1 - self.momentum) * g)
        p.sub_(self.lr * v)


class Adam(Optimizer):
    """Adam with bias correction; weight_decay adds wd p to the gradient (L2), like torch's Adam."""

    def __init__(
        self,
        params: Sequence[Tensor],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        bias_correction: bool = True,
    ) -> None:
        super().__init__(params, lr)
        _check_hyper("betas[0]", betas[0], 0.0, 1.0)
        _check_hyper("betas[1]", betas[1], 0.0, 1.0)
        _check_hyper("eps", eps, 0.0, low_open=True)
        _check_hyper("weight_decay", weight_decay, 0.0)
        self.betas, self.eps, self.weight_decay = betas, eps, weight_decay
        self.bias_correction = bias_correction

    def update(self, p: Tensor, g: Tensor, state: dict[str, Tensor]) -> None:
        self.adam_step(p, g + self.weight_decay * p, state)  # L2: the decay goes through m and v

    def adam_step(self, p: Tensor, g: Tensor, state: dict[str, Tensor]) -> None:
        """Running averages m of g and v of g², bias-corrected; p <- p - lr m̂ / (√v̂ + eps)."""
        b1, b2 = self.betas
        m = state.setdefault("m", torch.zeros_like(p))
        v = state.setdefault("v", torch.zeros_like(p))
        m.mul_(b1).add_((1 - b1) * g)
        v.mul_(b2).add_((1 - b2) * g * g)
        m_hat, v_hat = m, v
        if self.bias_correction:  # both averages start at 0 and are too small early on
            m_hat, v_hat = m / (1 - b1**self.t), v / (1 - b2**self.t)
        p.sub_(self.lr * m_hat / (v_hat.sqrt() + self.eps))


class AdamW(Adam):
    """Adam with decoupled weight decay: p <- p (1 - lr wd), then Adam's step on g alone."""

    def __init__(
        self, params: Sequence[Tensor], lr: float = 1e-3, weight_decay: float = 1e-2, **adam: Any
    ) -> None:
        """Adam's arguments (betas, eps); the decay defaults to 0.01, as in torch.optim.AdamW."""
        super().__init__(params, lr, weight_decay=weight_decay, **adam)

    def update(self, p: Tensor, g: Tensor, state: dict[str, Tensor]) -> None:
        p.mul_(1 - self.lr * self.weight_decay)  # decay the weights directly, outside m and v
        self.adam_step(p, g, state)


OPTIMIZERS: dict[str, type[Optimizer]] = {
    "sgd": SGD,
    "momentum": Momentum,
    "dampened_momentum": DampenedMomentum,
    "adam": Adam,
    "adamw": AdamW,
}


def make_optimizer(name: str, params: Sequence[Tensor], lr: float, **kwargs) -> Optimizer:
    """An optimizer of this module by name (see OPTIMIZERS)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](params, lr=lr, **kwargs)


# ---------------------------------------------------------------------------------------------
# Checking an optimizer step by step against torch.optim
# ---------------------------------------------------------------------------------------------


def trajectories(
    make_torch: Callable[[Iterable[Tensor]], torch.optim.Optimizer],
    make_scratch: Callable[[list[Tensor]], Optimizer],
    model: torch.nn.Module,
    X: Tensor,
    y: Tensor,
    num_steps: int,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Both runs' flattened parameters (P,) after each step, from the model's weights.

    The reference trains `model` (two nn.Linear layers, e.g. a dl.MLP) with a torch.optim
    optimizer and autograd's gradients of F.cross_entropy; the other copies its weights and
    trains them with a scratch optimizer and the manual gradients (`loss_and_grads`).
    """
    mine = params_from_module(model)
    torch_opt, scratch_opt = make_torch(model.parameters()), make_scratch(list(mine.values()))
    for _ in range(num_steps):
        torch_opt.zero_grad()
        F.cross_entropy(model(X), y).backward()  # autograd's gradients
        torch_opt.step()
        _, grads = loss_and_grads(mine, X, y)  # the manual ones
        scratch_opt.step([grads[k] for k in PARAM_NAMES])
        ref = torch.cat([p.flatten() for p in params_from_module(model).values()])  # (P,)
        yield ref, torch.cat([p.flatten() for p in mine.values()])  # (P,), (P,)


def compare_trajectories(pairs: Iterable[tuple[Tensor, Tensor]]) -> tuple[float, bool]:
    """Largest difference of (reference, mine) pairs, and whether assert_close held for each.

    `compare_trajectories(trajectories(make_torch, make_scratch, model, X, y, num_steps))`.
    """
    max_diff, matches = 0.0, True
    for ref, now in pairs:
        max_diff = max(max_diff, (ref - now).abs().max().item())
        try:
            torch.testing.assert_close(now, ref)
        except AssertionError:
            matches = False
    return max_diff, matches


# ---------------------------------------------------------------------------------------------
# Training the from-scratch MLP
# ---------------------------------------------------------------------------------------------


@dataclass
class ScratchRun:
    """A from-scratch training run: final weights, per-epoch History, loss of every step."""

    params: Params
    history: History
    step_losses: list[float] = field(default_factory=list)


def train_epoch(params: Params, optimizer: Optimizer, batches) -> list[float]:
    """One pass: forward, manual backward, optimizer step per batch; returns each batch's loss."""
    losses = []
    for X, y in batches:
        loss, grads = loss_and_grads(params, X, y)
        optimizer.step([grads[k] for k in PARAM_NAMES])
        losses.append(loss.item())
    if not all(math.isfinite(v) for v in losses):
        raise FloatingPointError("training loss became NaN or infinite: lower the learning rate")
    return losses


def evaluate(params: Params, X: Tensor, y: Tensor, batch_size: int = 1024) -> tuple[float, float]:
    """Mean cross-entropy per sample and accuracy (a fraction) on preloaded tensors."""
    loss_sum, correct = 0.0, 0
    for start in range(0, len(X), batch_size):
        logits, _ = mlp_forward(params, X[start : start + batch_size])  # (b, 10)
        yb = y[start : start + batch_size]
        loss_sum += cross_entropy(logits, yb).item() * len(yb)
        correct += int((logits.argmax(1) == yb).sum())
    return loss_sum / len(X), correct / len(X)


def fit(
    params: Params,
    optimizer: Optimizer,
    data: MNISTSplits,
    *,
    num_epochs: int,
    batch_size: int,
    seed: int = 0,
) -> ScratchRun:
    """Train on data.X_train (epoch e shuffled with seed + e, like dl.fit); validate each epoch."""
    history, step_losses = History(), []
    for epoch in range(num_epochs):
        tic = time.perf_counter()
        batches = iterate_batches(
            data.X_train, data.y_train, batch_size, shuffle=True, seed=seed + epoch
        )
        losses = train_epoch(params, optimizer, batches)
        seconds = time.perf_counter() - tic
        val_loss, val_acc = evaluate(params, data.X_val, data.y_val)
        history.append(sum(losses) / len(losses), val_loss, val_acc, seconds)
        step_losses += losses
    return ScratchRun(params, history, step_losses)


def train_mlp(
    lr: float,
    data: MNISTSplits,
    *,
    optimizer: str = "sgd",
    num_epochs: int,
    batch_size: int,
    seed: int = 0,
    device: torch.device | str = "cpu",
    **kwargs: Any,
) -> ScratchRun:
    """A fresh `init_mlp(seed=seed)` trained by `fit` with an optimizer of OPTIMIZERS at `lr`.

    `kwargs` go to the optimizer (momentum, weight_decay, ...); lr comes first so that
    `functools.partial(train_mlp, data=..., ...)` is a `train(lr)` for `dl.zoo.search_lr`.
    """
    params = init_mlp(seed=seed, device=device)
    opt = make_optimizer(optimizer, list(params.values()), lr, **kwargs)
    return fit(params, opt, data, num_epochs=num_epochs, batch_size=batch_size, seed=seed)


def steps_to(losses: Sequence[float], level: float, window: int = 50) -> int | None:
    """First step at which the mean of the last `window` losses is below `level` (None: never)."""
    for i in range(window, len(losses) + 1):
        if sum(losses[i - window : i]) / window < level:
            return i
    return None


# ---------------------------------------------------------------------------------------------
# Two-dimensional test functions for optimizer trajectories
# ---------------------------------------------------------------------------------------------


def quadratic(P: Tensor, a: float = 1.0, b: float = 50.0) -> Tensor:
    """Ill-conditioned bowl f(x, y) = (a x² + b y²) / 2 at points P (..., 2); condition b / a."""
    return 0.5 * (a * P[..., 0] ** 2 + b * P[..., 1] ** 2)


def quadratic_grad(P: Tensor, a: float = 1.0, b: float = 50.0) -> Tensor:
    """Gradient (a x, b y) of `quadratic`, shape (..., 2)."""
    return torch.stack([a * P[..., 0], b * P[..., 1]], dim=-1)


def rosenbrock(P: Tensor) -> Tensor:
    """Rosenbrock's banana f(x, y) = (1 - x)² + 100 (y - x²)², minimum 0 at (1, 1)."""
    x, y = P[..., 0], P[..., 1]
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def rosenbrock_grad(P: Tensor) -> Tensor:
    """Gradient of `rosenbrock`, shape (..., 2)."""
    x, y = P[..., 0], P[..., 1]
    return torch.stack([-2 * (1 - x) - 400 * x * (y - x**2), 200 * (y - x**2)], dim=-1)


def optimize_path(
    grad_fn: Callable[[Tensor], Tensor],
    start: Sequence[float],
    make: Callable[[list[Tensor]], Optimizer],
    num_steps: int,
) -> Tensor:
    """The points (num_steps + 1, 2) an optimizer visits from `start`, given exact gradients."""
    P = torch.tensor(start, dtype=torch.float64)
    optimizer, path = make([P]), [P.clone()]
    for _ in range(num_steps):
        optimizer.step([grad_fn(P)])
        path.append(P.clone())
    return torch.stack(path)


class BestPath(NamedTuple):
    """The learning rate of a grid whose path ends lowest, that path and its final value."""

    value: float  # f at the last point
    lr: float
    path: Tensor  # (num_steps + 1, 2)


def best_path(
    f: Callable[[Tensor], Tensor],
    grad_fn: Callable[[Tensor], Tensor],
    start: Sequence[float],
    num_steps: int,
    kind: str,
    lrs: Iterable[float],
    **kwargs: Any,
) -> BestPath:
    """Run optimizer `kind` (see OPTIMIZERS) from `start` at each lr; keep the lowest final f.

    Diverged runs (a final value that is not finite) are skipped; ties go to the earlier lr.
    """
    best: BestPath | None = None
    for lr in lrs:

        def make(params: list[Tensor], lr: float = lr) -> Optimizer:
            return make_optimizer(kind, params, lr=lr, **kwargs)

        path = optimize_path(grad_fn, start, make, num_steps)
        value = f(path[-1]).item()
        if math.isfinite(value) and (best is None or value < best.value):
            best = BestPath(value, lr, path)
    if best is None:
        raise FloatingPointError(f"{kind} diverged at every learning rate of the grid")
    return best
