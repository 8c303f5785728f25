import math

import pytest
import torch
from sklearn.metrics import roc_auc_score, roc_curve

import dlbook as dl
from dlbook import privacy as P


def test_attack_auc_and_advantage_match_scikit_learn():
    g = torch.Generator().manual_seed(0)
    members, others = torch.randn(300, generator=g) + 0.5, torch.randn(200, generator=g)
    report = P.attack_report(members, others, num_bootstrap=50)
    y = [1] * 300 + [0] * 200
    scores = torch.cat([members, others]).numpy()
    fpr, tpr, _ = roc_curve(y, scores)
    assert report.auc.estimate == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
    assert report.advantage.estimate == pytest.approx((tpr - fpr).max(), abs=1e-12)
    assert report.auc.low <= report.auc.estimate <= report.auc.high


def test_separable_losses_give_auc_one_and_equal_ones_chance():
    perfect = P.attack_report(P.loss_attack_scores(torch.zeros(100)), -torch.ones(100) * 5)
    assert perfect.auc.estimate == 1.0 and perfect.advantage.estimate == 1.0
    g = torch.Generator().manual_seed(1)
    same = P.attack_report(torch.rand(2000, generator=g), torch.rand(2000, generator=g), 100)
    assert abs(same.auc.estimate - 0.5) < 0.04 and same.auc.low < 0.5 < same.auc.high


def test_reference_masks_put_each_example_in_half_the_models():
    masks = P.reference_masks(8, 50, seed=3)
    assert masks.shape == (8, 50) and (masks.sum(0) == 4).all()
    with pytest.raises(ValueError, match="even"):
        P.reference_masks(3, 5)


def test_lira_separates_in_from_out_when_their_statistics_differ():
    g = torch.Generator().manual_seed(0)
    inside = P.reference_masks(8, 400, seed=0)
    reference = torch.randn(8, 400, generator=g) + 3.0 * inside  # IN models: higher confidence
    members = torch.arange(400) < 200
    target = torch.randn(400, generator=g) + 3.0 * members
    scores = P.lira_scores(target, reference, inside)
    assert P.attack_report(scores[:200], scores[200:], 20).auc.estimate > 0.95


def test_logit_confidence_is_log_odds_of_the_true_class():
    model = torch.nn.Linear(5, 10)
    X, y = torch.randn(7, 5), torch.randint(10, (7,))
    p = model(X).softmax(1).double()[torch.arange(7), y]
    expected = torch.log(p / (1 - p))
    assert torch.allclose(P.logit_confidence(model, X, y), expected, atol=1e-5)
    losses = P.per_example_loss(model, X, y)
    assert torch.allclose(losses.double(), -torch.log(p), atol=1e-5)


def test_scatter_features_shape_and_group_normalization():
    X = (torch.rand(3, 1, 28, 28) - dl.MNIST_MEAN) / dl.MNIST_STD
    F = P.scatter_features(X)
    assert F.shape == (3, P.NUM_FEATURES) and F.dtype == torch.float16
    groups = F.float().reshape(3, P.SCATTER_GROUPS, -1)
    assert torch.allclose(groups.mean(-1), torch.zeros(3, P.SCATTER_GROUPS), atol=2e-3)


def test_dp_training_reports_an_epsilon_within_its_target(tmp_path):
    g = torch.Generator().manual_seed(0)
    y = torch.randint(10, (512,), generator=g)
    X = torch.randn(512, P.NUM_FEATURES, generator=g) * 0.1
    X[torch.arange(512), y] += 3.0  # separable: class c lights feature c
    recipe = P.DPRecipe(epsilon=3.0, num_epochs=2, batch_size=128, lr=1.0)
    run = P.cached_dp_run(X, y, recipe, folder=tmp_path)
    assert 0 < run.epsilon <= 3.0 and run.noise_multiplier > 0 and run.steps > 0
    block = run.privacy_block()
    dl.package.Privacy.model_validate(block)
    again = P.cached_dp_run(X, y, recipe, folder=tmp_path)  # from the cache
    assert again.epsilon == run.epsilon
    assert torch.equal(again.model.weight, run.model.weight)
    plain = P.train_dp(X, y, P.DPRecipe(epsilon=None, num_epochs=2, batch_size=128, lr=0.1))
    assert plain.epsilon is None and plain.privacy_block() is None
    assert math.isclose(plain.sample_rate, 128 / 512)


def test_attacks_on_an_overfit_model_beat_chance():
    torch.manual_seed(0)
    X, y = torch.randn(80, 1, 28, 28), torch.randint(10, (80,))
    members, others = (X[:40], y[:40]), (X[40:], y[40:])

    def train(model, X, y, seed):
        return P.train_small(model, X, y, 30, seed=seed)

    target = train(dl.build_model("mlp", hidden=32), *members, 0)
    loss = P.loss_attack(target, members, others, num_bootstrap=20)
    assert loss.auc.estimate > 0.9  # random labels: only memorization fits them
    lira = P.lira_attack(
        target, lambda: dl.build_model("mlp", hidden=32), train, members, others, 4, 20
    )
    assert lira.auc.estimate > 0.7


def test_split_pool_draws_two_disjoint_random_halves():
    X, y = torch.arange(100.0)[:, None], torch.arange(100)
    (Xm, ym), (Xo, yo) = P.split_pool(X, y, 30, seed=1)
    assert len(ym) == len(yo) == 30 and not set(ym.tolist()) & set(yo.tolist())
    assert torch.equal(Xm[:, 0].long(), ym)  # images and labels stay paired
    assert ym.tolist() != list(range(30))  # drawn at random, not the first examples
    assert torch.equal(P.split_pool(X, y, 30, seed=1)[0][1], ym)  # and reproducibly
    with pytest.raises(ValueError, match="between 1 and 50"):
        P.split_pool(X, y, 51)


def test_tpr_at_reads_the_roc_curve_at_a_false_positive_rate():
    members, others = torch.tensor([5.0, 4.0, 0.5, 0.2]), torch.tensor([3.0, 1.0, 0.0, -1.0])
    report = P.attack_report(members, others, num_bootstrap=10)
    assert report.tpr_at(0.0) == 0.5  # two members score above every non-member
    assert report.tpr_at(0.25) == 0.5 and report.tpr_at(0.5) == 1.0  # then 0.5 and 0.2 pass 1


def test_cached_trainer_trains_once_and_retrains_a_damaged_cache(tmp_path, capsys):
    calls = []

    def train(model, X, y, seed):
        calls.append(seed)
        return P.train_small(model, X, y, 2, seed=seed)

    build = lambda: dl.build_model("mlp", hidden=8)  # noqa: E731
    X, y = torch.randn(32, 1, 28, 28), torch.randint(10, (32,))
    cached = P.cached_trainer(train, "mlp-test", {"epochs": 2}, tmp_path)
    first = cached(build(), X, y, 3)
    again = cached(build(), X, y, 3)
    assert calls == [3] and torch.equal(first(X), again(X))
    cached(build(), X, y, 4)  # another seed, another model
    cached(build(), X[:16], y[:16], 3)  # other examples, another model
    P.cached_trainer(train, "mlp-test", {"epochs": 3}, tmp_path)(build(), X, y, 3)
    assert calls == [3, 4, 3, 3]  # another configuration, another model
    for weights in tmp_path.glob("mlp-test-*.safetensors"):
        weights.write_bytes(b"damaged")
    cached(build(), X, y, 3)
    assert calls == [3, 4, 3, 3, 3] and "training it again" in capsys.readouterr().out


def test_cached_scatter_features_computes_the_named_splits_once(tiny_splits, tmp_path, monkeypatch):
    small = tiny_splits.subset(8, 4)
    first = P.cached_scatter_features(small, tmp_path, ("train", "test"))
    assert list(first) == ["train", "test"] and first["test"].shape == (4, P.NUM_FEATURES)

    def no_compute(X):
        raise AssertionError("the cached features should have been read")

    monkeypatch.setattr(P, "scatter_features", no_compute)
    again = P.cached_scatter_features(small, tmp_path, ("train", "test"))
    assert all(torch.equal(first[k], again[k]) for k in first)
