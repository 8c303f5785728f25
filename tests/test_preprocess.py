import io

import numpy as np
import pytest
import torch
from PIL import Image

from dlbook import preprocess as pp


def _digit() -> np.ndarray:
    """A white '1'-like stroke on black, off-centre."""
    img = np.zeros((28, 28), dtype=np.float32)
    img[3:15, 2:5] = 1.0
    return img


def test_mnist_format_centres_and_scales():
    out = pp.to_mnist_format(_digit())
    assert out.shape == (28, 28)
    ys, xs = np.indices(out.shape)
    assert (
        abs((ys * out).sum() / out.sum() - 13.5) <= 1
        and abs((xs * out).sum() / out.sum() - 13.5) <= 1
    )
    rows = np.nonzero(out.max(1) > pp.INK_THRESHOLD)[0]
    assert 18 <= rows.max() - rows.min() + 1 <= 21  # the longer side fills the 20-pixel box


def test_dark_on_light_is_inverted():
    direct = pp.to_mnist_format(_digit())
    inverted = pp.to_mnist_format(1.0 - _digit())
    np.testing.assert_allclose(direct, inverted, atol=1e-6)


def test_large_png_round_trip_matches_small():
    small = pp.image_to_input(pp.digit_to_png(_digit()))
    large = pp.image_to_input(pp.digit_to_png(_digit(), size=300, dark_on_light=True))
    assert small.shape == large.shape == (1, 1, 28, 28)
    assert (small - large).abs().mean() < 0.15  # same digit, resampled


def test_normalization_constants():
    X = pp.normalize_pixels(np.zeros((28, 28)))
    assert X.shape == (1, 1, 28, 28) and X[0, 0, 0, 0].item() == pytest.approx(-0.1307 / 0.3081)


def test_normalization_with_a_cards_constants():
    pixels = np.random.default_rng(0).random((3, 28, 28)).astype(np.float32)
    X = pp.normalize_pixels(pixels, mean=0.5, std=0.25)
    assert X.shape == (3, 1, 28, 28)
    assert torch.equal(X[:, 0], (torch.from_numpy(pixels) - 0.5) / 0.25)
    png = pp.digit_to_png(_digit())
    assert torch.equal(
        pp.image_to_input(png, mean=0.5, std=0.25),
        pp.normalize_pixels(pp.to_mnist_format(pp.decode_image(png)), 0.5, 0.25),
    )


@pytest.mark.parametrize(
    "data, words",
    [
        (b"", "empty"),
        (b"hello", "not a PNG or JPEG"),
        (pp.digit_to_png(np.random.default_rng(0).random((28, 28)))[:100], "could not be decoded"),
    ],
    ids=["empty", "not-an-image", "truncated"],
)
def test_bad_bytes(data, words):
    with pytest.raises(pp.InputError, match=words):
        pp.decode_image(data)


def test_other_formats_are_refused():
    out = io.BytesIO()
    Image.new("L", (10, 10)).save(out, format="GIF")
    with pytest.raises(pp.InputError, match="unsupported image format GIF"):
        pp.decode_image(out.getvalue())


def test_blank_image_has_no_digit():
    with pytest.raises(pp.InputError, match="no digit"):
        pp.to_mnist_format(np.zeros((28, 28)))


@pytest.mark.parametrize(
    "values, words",
    [
        ([[0.0] * 28] * 27, "shape 28x28; got 27x28"),
        ([[float("nan")] * 28] * 28, "NaN"),
        ([[2.0] * 28] * 28, r"must lie in \[0, 1\]"),
        ("abc", "28x28"),
        ([[0.0, "x"] * 14] * 28, "array of numbers"),
    ],
)
def test_check_array(values, words):
    with pytest.raises(pp.InputError, match=words):
        pp.check_array(values)


def _with_alpha(ink: np.ndarray, color: int, mode: str) -> bytes:
    """A PNG of `ink` drawn in `color` (0 black, 255 white) on a transparent background."""
    alpha = (ink * 255).astype(np.uint8)
    paint = np.full_like(alpha, color)
    layers = [paint, alpha] if mode == "LA" else [paint, paint, paint, alpha]
    out = io.BytesIO()
    Image.fromarray(np.stack(layers, axis=-1)).save(out, format="PNG")  # (H, W, 2): LA; 4: RGBA
    return out.getvalue()


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
@pytest.mark.parametrize("color", [0, 255], ids=["black-ink", "white-ink"])
def test_transparent_background_is_composited_before_reading_ink(mode, color):
    # A canvas drawing: the ink is in the alpha channel, the paint may be black. Dropping the
    # alpha channel left a black-on-black image ("no digit"); composited onto the background
    # opposite to the ink, it reads as the same digit as the opaque white-on-black image.
    expected = pp.to_mnist_format(_digit())
    got = pp.to_mnist_format(pp.decode_image(_with_alpha(_digit(), color, mode)))
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_fully_transparent_image_has_no_digit():
    with pytest.raises(pp.NoDigitError):
        pp.to_mnist_format(pp.decode_image(_with_alpha(np.zeros((28, 28)), 0, "RGBA")))


def test_numbers_too_large_for_a_float_are_an_input_error():
    with pytest.raises(pp.InputError, match="array of numbers"):
        pp.check_array([[10**400] * 28] * 28)
