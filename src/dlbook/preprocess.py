"""Turn any uploaded digit image (or a 28x28 array) into the model's input, as MNIST was made."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from .data import MNIST_MEAN, MNIST_STD

MAX_PIXELS = 4096 * 4096  # refuse decompression bombs long before they fill memory
INK_THRESHOLD = 0.1  # pixels brighter than this (after inversion) count as ink


class InputError(ValueError):
    """The input cannot be turned into a digit image; the message says why."""


class NoDigitError(InputError):
    """A valid image that holds no ink: well-formed, but nothing to classify."""


def decode_image(data: bytes) -> np.ndarray:
    """PNG/JPEG bytes -> (H, W) float32 grayscale in [0, 1]; raises InputError on bad data."""
    if not data:
        raise InputError("the image is empty")
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format not in ("PNG", "JPEG"):
                raise InputError(f"unsupported image format {img.format}: send a PNG or JPEG")
            if img.width * img.height > MAX_PIXELS:
                raise InputError(
                    f"image is {img.width}x{img.height} pixels; the limit is {MAX_PIXELS:,} pixels"
                )
            img.load()  # decodes fully: truncated files fail here
            return _grayscale(ImageOps.exif_transpose(img))
    except UnidentifiedImageError:
        raise InputError("the upload is not a PNG or JPEG image") from None
    except (OSError, SyntaxError, Image.DecompressionBombError) as err:
        raise InputError(
            f"the image could not be decoded ({err}): send a complete PNG or JPEG"
        ) from None


def _grayscale(img: Image.Image) -> np.ndarray:
    """A decoded image -> (H, W) float32 in [0, 1], transparency composited onto a background.

    A drawing saved by a canvas keeps its strokes in the alpha channel, often painted black on
    a transparent (0, 0, 0, 0) background. Dropping alpha would make it black on black, so we
    composite onto the background opposite to the ink: white under dark ink, black under light.
    """
    if img.mode not in ("RGBA", "LA", "PA") and "transparency" not in img.info:
        return np.asarray(img.convert("L"), dtype=np.float32) / 255.0
    la = np.asarray(img.convert("RGBA").convert("LA"), dtype=np.float32) / 255.0  # (H, W, 2)
    gray, alpha = la[..., 0], la[..., 1]
    ink_level = (gray * alpha).sum() / max(alpha.sum(), 1e-12)  # mean gray of what is drawn
    background = 1.0 if ink_level < 0.5 else 0.0
    return alpha * gray + (1.0 - alpha) * background


def to_mnist_format(pixels: np.ndarray) -> np.ndarray:
    """(H, W) grayscale in [0, 1] -> (28, 28) like MNIST: white ink on black, digit in a 20x20
    box centred by its centre of mass. Dark ink on a light background is inverted first."""
    if pixels.mean() > 0.5:  # mostly light: a dark digit on paper
        pixels = 1.0 - pixels
    ink = pixels > INK_THRESHOLD
    if not ink.any():
        raise NoDigitError("the image contains no digit (no ink found)")
    rows, cols = np.nonzero(ink)
    crop = pixels[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    scale = 20.0 / max(crop.shape)
    h, w = max(1, round(crop.shape[0] * scale)), max(1, round(crop.shape[1] * scale))
    small = Image.fromarray((crop * 255).astype(np.uint8)).resize((w, h), Image.Resampling.LANCZOS)
    digit = np.asarray(small, dtype=np.float32) / 255.0  # (h, w)
    canvas = np.zeros((28, 28), dtype=np.float32)
    top, left = (28 - h) // 2, (28 - w) // 2
    canvas[top : top + h, left : left + w] = digit
    return _center_of_mass_shift(canvas)


def _center_of_mass_shift(canvas: np.ndarray) -> np.ndarray:
    """Shift (28, 28) so its centre of mass sits at the centre, as in MNIST's preparation."""
    total = canvas.sum()
    ys, xs = np.indices(canvas.shape)
    dy = int(round(13.5 - (ys * canvas).sum() / total))
    dx = int(round(13.5 - (xs * canvas).sum() / total))
    shifted = np.zeros_like(canvas)
    src = canvas[max(0, -dy) : 28 - max(0, dy), max(0, -dx) : 28 - max(0, dx)]
    shifted[max(0, dy) : max(0, dy) + src.shape[0], max(0, dx) : max(0, dx) + src.shape[1]] = src
    return shifted


def check_array(values: object, name: str = "pixels") -> np.ndarray:
    """A JSON 28x28 list of numbers in [0, 1] (white ink on black) -> (28, 28) float32."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an integer beyond float
        raise InputError(f"{name} must be a 28x28 array of numbers") from None
    if array.shape != (28, 28):
        raise InputError(f"{name} must have shape 28x28; got {_shape(values)}")
    if not np.isfinite(array).all():
        raise InputError(f"{name} contains NaN or infinite values")
    if array.min() < 0 or array.max() > 1:
        raise InputError(
            f"{name} values must lie in [0, 1] (white ink on black, as in MNIST); "
            f"got [{array.min():g}, {array.max():g}]; divide 0-255 values by 255"
        )
    return array.astype(np.float32)


def _shape(values: object) -> str:
    """A readable shape of nested lists, for error messages."""
    dims = []
    while isinstance(values, list):
        dims.append(str(len(values)))
        values = values[0] if values else None
    return "x".join(dims) or "a scalar"


def normalize_pixels(
    pixels: np.ndarray, mean: float = MNIST_MEAN, std: float = MNIST_STD
) -> Tensor:
    """(N, 28, 28) or (28, 28) pixels in [0, 1] -> (N, 1, 28, 28), standardized with mean/std
    (a model card's `input.normalization`; MNIST's by default)."""
    X = torch.as_tensor(pixels, dtype=torch.float32).reshape(-1, 1, 28, 28)
    return (X - mean) / std


def image_to_input(data: bytes, mean: float = MNIST_MEAN, std: float = MNIST_STD) -> Tensor:
    """PNG/JPEG bytes of one digit, any size or polarity -> (1, 1, 28, 28) model input."""
    return normalize_pixels(to_mnist_format(decode_image(data)), mean, std)


def digit_to_png(pixels: np.ndarray, size: int = 28, dark_on_light: bool = False) -> bytes:
    """(28, 28) white-on-black pixels -> PNG bytes, optionally enlarged and inverted (for demos)."""
    img = Image.fromarray(np.clip(pixels * 255, 0, 255).astype(np.uint8))
    if dark_on_light:
        img = ImageOps.invert(img)
    if size != 28:
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()
