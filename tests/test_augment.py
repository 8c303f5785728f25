import torch

import dlbook as dl

A = dl.augment


def test_zero_transform_is_the_identity():
    X = torch.randn(5, 1, 28, 28)
    n = len(X)
    out = A.affine(X, torch.zeros(n), torch.zeros(n, 2), torch.ones(n))
    torch.testing.assert_close(out, X, atol=1e-4, rtol=0)


def test_quarter_turn_equals_rot90():
    X = torch.randn(3, 1, 28, 28)
    out = A.affine(X, torch.full((3,), 90.0), torch.zeros(3, 2), torch.ones(3))
    torch.testing.assert_close(out, torch.rot90(X, 1, dims=(2, 3)), atol=1e-4, rtol=0)


def test_whole_pixel_shift_moves_pixels_and_fills_the_background():
    X = torch.rand(2, 1, 28, 28)
    shifts = torch.tensor([[3.0, 0.0], [0.0, -2.0]])  # (dx, dy) in pixels
    out = A.affine(X, torch.zeros(2), shifts, torch.ones(2), fill=-1.0)
    torch.testing.assert_close(out[0, :, :, 3:], X[0, :, :, :-3], atol=1e-4, rtol=0)
    torch.testing.assert_close(out[0, :, :, :3], torch.full_like(out[0, :, :, :3], -1.0))
    torch.testing.assert_close(out[1, :, :-2], X[1, :, 2:], atol=1e-4, rtol=0)
    torch.testing.assert_close(out[1, :, -2:], torch.full_like(out[1, :, -2:], -1.0))


def test_random_affine_is_seeded_and_varies_per_image():
    X = torch.randn(1, 1, 28, 28).expand(4, 1, 28, 28).contiguous()
    a = A.random_affine(X, torch.Generator().manual_seed(0))
    b = A.random_affine(X, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    assert not torch.allclose(a[0], a[1])  # each image gets its own transform
    aug = A.make_augment(seed=1, degrees=0.0, translate=0.0, scale=(1.0, 1.0))
    torch.testing.assert_close(aug(X), X, atol=1e-4, rtol=0)
