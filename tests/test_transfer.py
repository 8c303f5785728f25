import torch

import dlbook as dl

T = dl.transfer


def test_balanced_subset_takes_equal_counts_per_class():
    y = torch.arange(10).repeat(50)
    idx = T.balanced_subset(y, 100, seed=0)
    assert len(idx) == len(set(idx.tolist())) == 100
    assert torch.equal(torch.bincount(y[idx]), torch.full((10,), 10))
    assert torch.equal(T.balanced_subset(y, 10_000), torch.arange(500))


def test_steps_are_clipped():
    assert T.steps_for(100, 64, 10, 50, 300) == 50
    assert T.steps_for(1000, 64, 10, 50, 300) == 160
    assert T.steps_for(60_000, 64, 10, 50, 300) == 300


def test_conv_features_are_the_flattened_feature_maps():
    model = dl.CNN(4, 6, hidden=8).eval()
    X = torch.randn(5, 1, 28, 28)
    feats = T.conv_features(model, X, batch_size=2)
    with torch.inference_mode():
        torch.testing.assert_close(feats, model.features(X).flatten(1))
    assert feats.shape == (5, 6 * 49)


def test_linear_probe_separates_separable_features():
    torch.manual_seed(0)
    y = torch.randint(0, 10, (500,))
    feats = torch.nn.functional.one_hot(y, 10).float() + 0.1 * torch.randn(500, 10)
    probe = T.linear_probe(feats, y, steps=200)
    with torch.inference_mode():
        assert (probe(feats).argmax(1) == y).float().mean() == 1.0


def test_new_head_keeps_the_features_and_resets_the_last_layer():
    model = dl.CNN(4, 6, hidden=8)
    new = T.with_new_head(model)
    assert torch.equal(new.features[0].weight, model.features[0].weight)
    assert not torch.equal(new.head[4].weight, model.head[4].weight)
