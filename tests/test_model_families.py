"""The five model families of the algorithm-selection chapter, and the profiling helpers."""

import pytest
import torch
import torch.nn.functional as F

import dlbook as dl
from dlbook import profiling
from dlbook.models import LSTMClassifier, RNNClassifier, SelfAttention, TransformerClassifier

FAMILIES = ["mlp", "cnn", "rnn", "lstm", "transformer"]


@pytest.mark.parametrize("name", FAMILIES)
def test_logits_shape(name):
    model = dl.build_model(name)
    assert model(torch.randn(5, 1, 28, 28)).shape == (5, 10)
    assert model(torch.randn(1, 1, 28, 28)).shape == (1, 10)  # batch 1, as in the latency test


def test_registry_builds_each_family():
    kinds = {"rnn": RNNClassifier, "lstm": LSTMClassifier, "transformer": TransformerClassifier}
    for name, cls in kinds.items():
        assert type(dl.build_model(name)) is cls
    assert isinstance(dl.build_model("lstm").rnn, torch.nn.LSTM)
    assert isinstance(dl.build_model("rnn").rnn, torch.nn.RNN)


def _rnn_params(H: int, gates: int) -> int:
    """Parameters of a one-layer recurrent reader of 28-pixel rows plus the 10-way head."""
    return gates * (28 * H + H * H + 2 * H) + H * 10 + 10


def _vit_params(P: int, D: int, depth: int, ratio: int) -> int:
    """Parameters of the ViT by hand: patch embedding, positions, blocks, final norm, head."""
    block = 2 * 2 * D + (3 * D * D + 3 * D) + (D * D + D)  # two LayerNorms, qkv, proj
    block += (D * ratio * D + ratio * D) + (ratio * D * D + D)  # the MLP
    return (P * P * D + D) + (28 // P) ** 2 * D + depth * block + 2 * D + (10 * D + 10)


@pytest.mark.parametrize(
    "name, kwargs, expected",
    [
        ("cnn", {}, (9 * 32 + 2 * 32) + (9 * 32 * 64 + 2 * 64) + (64 * 49 * 128 + 128) + 1290),
        ("rnn", {"hidden": 128}, _rnn_params(128, gates=1)),
        ("rnn", {"hidden": 32}, _rnn_params(32, gates=1)),
        ("lstm", {"hidden": 128}, _rnn_params(128, gates=4)),
        ("transformer", {}, _vit_params(7, 64, 2, 2)),
        (
            "transformer",
            {"patch": 4, "dim": 32, "depth": 3, "heads": 2, "mlp_ratio": 4},
            _vit_params(4, 32, 3, 4),
        ),
    ],
)
def test_parameter_count(name, kwargs, expected):
    assert dl.count_parameters(dl.build_model(name, **kwargs)) == expected


# Overfitting one batch is tested for every family in tests/test_models.py.


def test_self_attention_matches_pytorch():
    """Our written-out attention equals torch's scaled_dot_product_attention with the same heads."""
    torch.manual_seed(0)
    attn, X = SelfAttention(dim=16, heads=4), torch.randn(3, 5, 16)  # (B, T, D)
    q, k, v = attn.qkv(X).split(16, dim=-1)  # each (B, T, D)
    heads = [t.view(3, 5, 4, 4).transpose(1, 2) for t in (q, k, v)]  # each (B, H, T, Dh)
    mixed = F.scaled_dot_product_attention(*heads)  # (B, H, T, Dh)
    expected = attn.proj(mixed.transpose(1, 2).reshape(3, 5, 16))
    torch.testing.assert_close(attn(X), expected)


def _reverse_patches(X, P: int = 7):
    """The same 7x7 patches of images (B, 1, 28, 28), in reverse order."""
    B, n = len(X), 28 // P
    patches = X.view(B, n, P, n, P).permute(0, 1, 3, 2, 4).reshape(B, n * n, P, P)
    patches = patches.flip(1).view(B, n, n, P, P)  # (B, rows, cols, P, P)
    return patches.permute(0, 1, 3, 2, 4).reshape(B, 1, 28, 28)


def test_transformer_needs_positions_to_see_layout():
    """Without position embeddings the ViT is a bag of patches; with them it sees their order."""
    torch.manual_seed(0)
    model, X = dl.build_model("transformer").eval(), torch.randn(2, 1, 28, 28)
    shuffled = _reverse_patches(X)
    assert not torch.allclose(model(X), model(shuffled), atol=1e-4)
    with torch.no_grad():
        model.pos.zero_()
    torch.testing.assert_close(model(X), model(shuffled))


def test_invalid_shapes_are_refused():
    with pytest.raises(ValueError, match="patch=5 must divide 28"):
        TransformerClassifier(patch=5)
    with pytest.raises(ValueError, match="dim=30 must be divisible by heads=4"):
        SelfAttention(dim=30, heads=4)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("mlp", 2 * (784 * 128 + 128 * 10)),
        ("rnn", 28 * 2 * (28 * 128 + 128 * 128) + 2 * 128 * 10),
        (
            "lstm",
            28 * 2 * 4 * (28 * 128 + 128 * 128) + 2 * 128 * 10,
        ),  # the fused kernel counted too
        ("cnn", 2 * (28 * 28 * 32 * 9 + 14 * 14 * 64 * 32 * 9 + 64 * 49 * 128 + 128 * 10)),
    ],
)
def test_flops_per_sample_match_hand_count(name, expected):
    torch.manual_seed(0)
    assert profiling.flops_per_sample(dl.build_model(name)) == expected


def test_flops_scale_with_batch_and_leave_no_warning(recwarn):
    model = dl.build_model("transformer")
    one = profiling.forward_flops(model, torch.zeros(1, 1, 28, 28))
    assert profiling.forward_flops(model, torch.zeros(4, 1, 28, 28)) == 4 * one
    assert len(recwarn) == 0


def test_cpu_latency_leaves_the_model_alone():
    model = dl.build_model("mlp").train()
    seconds = profiling.cpu_latency(model, warmup=1, repeats=3)
    assert 0 < seconds < 1 and model.training


def test_input_gradient_per_step():
    torch.manual_seed(0)
    model, X, y = dl.build_model("rnn"), torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    grads = profiling.input_gradient_per_step(model, X, y)
    assert grads.shape == (28,) and (grads >= 0).all()
    assert all(p.grad is None for p in model.parameters())
    X.requires_grad_(True)  # the reference: autograd on the same loss
    F.cross_entropy(model(X), y).backward()
    torch.testing.assert_close(grads, X.grad[:, 0].norm(dim=2).mean(dim=0))
