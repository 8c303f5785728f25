"""Data augmentation on preloaded tensors: a random affine transform per image, batched."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .data import MNIST_MEAN, MNIST_STD

BACKGROUND = -MNIST_MEAN / MNIST_STD  # a black pixel after standardization


def affine(
    X: Tensor, angles: Tensor, shifts: Tensor, scales: Tensor, fill: float = BACKGROUND
) -> Tensor:
    """Rotate (degrees, counter-clockwise), scale and shift (pixels, (dx, dy)) each image.

    X (N, C, H, W); angles and scales (N,); shifts (N, 2). Bilinear sampling; pixels that come
    into view take the value `fill`.
    """
    n, _, h, w = X.shape
    rad = angles.to(X) * math.pi / 180
    cos, sin, s = torch.cos(rad), torch.sin(rad), scales.to(X)
    # affine_grid maps each output pixel to where it samples the input: the inverse transform
    theta = torch.zeros(n, 2, 3, dtype=X.dtype, device=X.device)  # (N, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos / s, -sin / s
    theta[:, 1, 0], theta[:, 1, 1] = sin / s, cos / s
    theta[:, 0, 2] = -2 * shifts[:, 0].to(X) / w  # grid coordinates span 2 over the width
    theta[:, 1, 2] = -2 * shifts[:, 1].to(X) / h
    grid = F.affine_grid(theta, list(X.shape), align_corners=False)  # (N, H, W, 2)
    out = F.grid_sample(X - fill, grid, mode="bilinear", align_corners=False)  # zeros outside
    return out + fill


def random_affine(
    X: Tensor,
    generator: torch.Generator,
    degrees: float = 10.0,
    translate: float = 0.1,
    scale: tuple[float, float] = (0.9, 1.1),
    fill: float = BACKGROUND,
) -> Tensor:
    """Each image rotated by U(-degrees, degrees), shifted by up to translate * size, scaled."""
    n, _, h, w = X.shape
    u = torch.rand(n, 4, generator=generator)  # (N, 4) on the CPU: the same draws everywhere
    angles = (2 * u[:, 0] - 1) * degrees
    shifts = (2 * u[:, 1:3] - 1) * translate * torch.tensor([w, h])
    scales = scale[0] + u[:, 3] * (scale[1] - scale[0])
    return affine(X, angles, shifts, scales, fill)


def make_augment(
    seed: int = 0, **kwargs: float | tuple[float, float]
) -> Callable[[Tensor], Tensor]:
    """A batch transform X -> random_affine(X, ...) with its own seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    return lambda X: random_affine(X, generator, **kwargs)  # type: ignore[arg-type]
