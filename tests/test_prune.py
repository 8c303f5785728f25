import pytest
import torch

import dlbook as dl

P = dl.prune


def _cnn(seed: int = 0) -> dl.CNN:
    torch.manual_seed(seed)
    model = dl.CNN(8, 12, hidden=16)
    for bn in (model.features[1], model.features[5]):  # non-trivial running statistics
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.mark.parametrize("amount", [0.0, 0.5, 0.9, 0.95])
def test_global_pruning_reaches_the_asked_sparsity(amount):
    model = P.global_magnitude_prune(_cnn(), amount)
    total = sum(m.weight.numel() for m, _ in P.prunable(model))
    assert P.sparsity(model) == round(amount * total) / total


def test_global_pruning_zeros_the_smallest_weights_across_layers():
    model = P.global_magnitude_prune(_cnn(), 0.5)
    kept = torch.cat([m.weight.flatten() for m, _ in P.prunable(model)])
    orig = torch.cat([m.weight_orig.flatten() for m, _ in P.prunable(model)])
    threshold = orig.abs().kthvalue(len(orig) // 2).values
    assert (orig[kept == 0].abs() <= threshold).all()
    assert (orig[kept != 0].abs() >= threshold).all()


def test_masks_survive_training_and_removal():
    model = P.global_magnitude_prune(_cnn(), 0.8).train()
    X, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    torch.nn.functional.cross_entropy(model(X), y).backward()
    opt.step()
    before = P.sparsity(model)
    assert before >= 0.8 - 1e-3
    P.remove_masks(model)
    assert P.sparsity(model) == before and not hasattr(model.features[0], "weight_mask")


def test_kept_channels_are_the_largest_l1_filters():
    conv = _cnn().features[4]
    idx = P.kept_channels(conv, 0.5)
    norms = conv.weight.detach().abs().sum((1, 2, 3))
    assert len(idx) == 6
    assert set(idx.tolist()) == set(norms.topk(6).indices.tolist())


def test_narrow_cnn_equals_the_wide_one_with_pruned_channels_zeroed():
    wide = _cnn()
    narrow = P.channel_prune_cnn(wide, 0.5)
    assert (narrow.features[0].out_channels, narrow.features[4].out_channels) == (4, 6)
    masked = _cnn()  # the same weights; pruned channels silenced through BatchNorm's affine
    for conv, bn in (
        (masked.features[0], masked.features[1]),
        (masked.features[4], masked.features[5]),
    ):
        drop = torch.ones(conv.out_channels, dtype=torch.bool)
        drop[P.kept_channels(conv, 0.5)] = False
        bn.weight.data[drop], bn.bias.data[drop] = 0.0, 0.0
    X = torch.randn(7, 1, 28, 28)
    with torch.inference_mode():
        torch.testing.assert_close(narrow(X), masked(X), atol=1e-5, rtol=1e-5)
    assert dl.count_parameters(narrow) < dl.count_parameters(wide)
