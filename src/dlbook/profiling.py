"""What a model costs: forward FLOPs counted by PyTorch, and batch-1 CPU latency."""

from __future__ import annotations

import copy
import warnings

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
        with torch.backends.mkldnn.flags(enabled=False), torch.inference_mode():
            with FlopCounterMode(display=False) as counter:
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
    return X.grad[:, 0].norm(dim=2).mean(dim=0).detach()  # (28,)
