"""Pruning: global magnitude pruning with masks, and channel pruning that builds a narrower CNN."""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn
from torch.nn.utils import prune

from .models import CNN


def prunable(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """(module, 'weight') of every convolution and linear layer: what pruning may zero."""
    return [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def global_magnitude_prune(model: nn.Module, amount: float) -> nn.Module:
    """Zero the `amount` fraction of all prunable weights with the smallest |w|, across layers.

    The masks stay (weight = weight_orig * weight_mask), so further training keeps them at zero.
    """
    prune.global_unstructured(prunable(model), pruning_method=prune.L1Unstructured, amount=amount)
    return model


def sparsity(model: nn.Module) -> float:
    """Fraction of the prunable weights that are exactly zero."""
    weights = [getattr(m, name) for m, name in prunable(model)]
    zeros = sum(int((w == 0).sum()) for w in weights)
    return zeros / sum(w.numel() for w in weights)


def remove_masks(model: nn.Module) -> nn.Module:
    """Make pruning permanent: plain (dense) weight tensors holding the zeros, no masks."""
    for module, name in prunable(model):
        if prune.is_pruned(module) and hasattr(module, f"{name}_mask"):
            prune.remove(module, name)
    return model


def kept_channels(conv: nn.Conv2d, keep: float) -> Tensor:
    """Indices of the output channels that L1 structured pruning keeps (sorted)."""
    probe = nn.Conv2d(conv.in_channels, conv.out_channels, 1, bias=False)
    probe.weight = nn.Parameter(conv.weight.detach().clone())  # any kernel size
    prune.ln_structured(probe, "weight", amount=1 - keep, n=1, dim=0)
    mask = cast(Tensor, probe.weight_mask)
    return torch.nonzero(mask.flatten(1).sum(1)).flatten()  # channels with a nonzero mask


def _bn_slice(bn: nn.BatchNorm2d, idx: Tensor) -> nn.BatchNorm2d:
    out = nn.BatchNorm2d(len(idx), eps=bn.eps, momentum=bn.momentum)
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(out, name).data.copy_(getattr(bn, name).detach()[idx])
    return out


def channel_prune_cnn(model: CNN, keep: float) -> CNN:
    """A narrower CNN keeping the `keep` fraction of each conv layer's channels (largest L1).

    The weights are sliced, not masked, so the smaller convolutions really run faster.
    """
    conv1, bn1 = cast(nn.Conv2d, model.features[0]), cast(nn.BatchNorm2d, model.features[1])
    conv2, bn2 = cast(nn.Conv2d, model.features[4]), cast(nn.BatchNorm2d, model.features[5])
    fc1, fc2 = cast(nn.Linear, model.head[1]), cast(nn.Linear, model.head[4])
    i1, i2 = kept_channels(conv1, keep), kept_channels(conv2, keep)
    narrow = CNN(len(i1), len(i2), fc1.out_features, cast(nn.Dropout, model.head[3]).p)
    cast(nn.Conv2d, narrow.features[0]).weight.data.copy_(conv1.weight.detach()[i1])
    narrow.features[1] = _bn_slice(bn1, i1)
    cast(nn.Conv2d, narrow.features[4]).weight.data.copy_(conv2.weight.detach()[i2][:, i1])
    narrow.features[5] = _bn_slice(bn2, i2)
    w = fc1.weight.detach().reshape(fc1.out_features, conv2.out_channels, 49)  # (H, c2, 7*7)
    new_fc1 = cast(nn.Linear, narrow.head[1])
    new_fc1.weight.data.copy_(w[:, i2].flatten(1))
    new_fc1.bias.data.copy_(fc1.bias.detach())
    narrow.head[4].load_state_dict(fc2.state_dict())
    return narrow.to(conv1.weight.device).eval()
