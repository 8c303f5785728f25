"""What a model costs: forward FLOPs and MACs, batch-1 CPU latency, a latency table."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from .timing import median_latency


def forward_flops(model: nn.Module, X: Tensor) -> int:
    """FLOPs of one forward pass on X in eval mode, counted by torch.utils.flop_counter.

    The counter charges 2 FLOPs per multiply-add of matrix products and convolutions and ignores
    element-wise work (activations, normalization, softmax). oneDNN's fused LSTM kernel is
    invisible to it, so oneDNN is off while counting: the LSTM then runs as its matrix products.
    """
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the oneDNN flags warn about Intel-GPU TF32 support
        with (
            torch.backends.mkldnn.flags(enabled=False),
            torch.inference_mode(),
            FlopCounterMode(display=False) as counter,
        ):
            model(X)
    return counter.get_total_flops()


def flops_per_sample(model: nn.Module, input_shape: tuple[int, ...] = (1, 28, 28)) -> int:
    """Forward FLOPs for one input of `input_shape`."""
    device = next(model.parameters()).device
    return forward_flops(model, torch.zeros(1, *input_shape, device=device))


def cpu_latency(
    model: nn.Module,
    input_shape: tuple[int, ...] = (1, 28, 28),
    warmup: int = 20,
    repeats: int = 100,
) -> float:
    """Median seconds of a batch-1 forward pass of a CPU copy of the model, after warm-up."""
    cpu_model = copy.deepcopy(model).cpu().eval()
    X = torch.zeros(1, *input_shape)  # (1, 1, 28, 28)
    with torch.inference_mode():
        return median_latency(lambda: cpu_model(X), warmup=warmup, repeats=repeats)


def input_gradient_per_step(model: nn.Module, X: Tensor, y: Tensor) -> Tensor:
    """Mean norm of d(loss)/d(row t) for each of the 28 rows of images X (N, 1, 28, 28)."""
    model.eval()
    X = X.detach().clone().requires_grad_(True)
    F.cross_entropy(model(X), y).backward()
    model.zero_grad(set_to_none=True)
    grad = X.grad
    assert grad is not None  # X requires grad and the loss depends on it
    return grad[:, 0].norm(dim=2).mean(dim=0).detach()  # (28,)


def macs_by_kind(model: nn.Module, input_shape: tuple[int, ...] = (1, 28, 28)) -> dict[str, int]:
    """Multiply-accumulates per sample in the Linear and Conv2d layers, found with forward hooks.

    A Linear layer does in*out MACs per input row; a Conv2d one MAC per weight per output
    position. Returns {"linear": ..., "conv": ...}.
    """
    totals = {"linear": 0, "conv": 0}

    def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        if isinstance(module, nn.Linear):
            totals["linear"] += module.in_features * module.out_features
        elif isinstance(module, nn.Conv2d):
            totals["conv"] += module.weight.numel() * output.shape[-1] * output.shape[-2]

    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    handles = [m.register_forward_hook(hook) for m in layers]
    device = next(model.parameters()).device
    try:
        with torch.inference_mode():
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        for handle in handles:
            handle.remove()
    return totals


Runner = Callable[[Tensor], object]


def latency_table(
    runners: Mapping[tuple[str, str], Runner],
    batches: Mapping[int, Tensor],
    warmup: int = 10,
    repeats: int = 50,
) -> list[dict[str, Any]]:
    """Median latency and throughput of each (model, runtime) runner on each batch.

    `runners[(model, runtime)]` is called as run(X) for every `batches[n]` (n images).
    Returns one row per runner: {"model", "runtime", "batch n: ms", "batch n: images/s", ...}.
    """
    rows = []
    for (model, runtime), run in runners.items():
        row: dict[str, Any] = {"model": model, "runtime": runtime}
        for n, X in batches.items():
            seconds = median_latency(lambda: run(X), warmup=warmup, repeats=repeats)  # noqa: B023
            row[f"batch {n}: ms"] = 1e3 * seconds
            row[f"batch {n}: images/s"] = n / seconds
        rows.append(row)
    return rows
