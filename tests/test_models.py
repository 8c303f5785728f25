import pytest
import torch
import torch.nn.functional as F

import dlbook as dl


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_logits_shape(name):
    model = dl.build_model(name)
    assert model(torch.randn(5, 1, 28, 28)).shape == (5, 10)


def test_mlp_is_the_seed_architecture():
    model = dl.MLP()
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 128), (128, 10)]
    assert dl.count_parameters(model) == 784 * 128 + 128 + 128 * 10 + 10


@pytest.mark.parametrize("name", list(dl.models.MODELS))
def test_overfits_one_batch(name):
    """A model that cannot memorize 64 examples has a bug; this is the cheapest check there is."""
    torch.manual_seed(0)
    X, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    model = dl.build_model(name)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(200):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(X), y)
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05
    assert (dl.predict(model, X) == y).all()


def test_unknown_model_is_refused():
    with pytest.raises(ValueError, match="unknown model 'bert'; choose one of mlp, cnn"):
        dl.build_model("bert")


def test_predict_matches_argmax_in_eval_mode():
    torch.manual_seed(0)
    model, X = dl.CNN(), torch.randn(300, 1, 28, 28)
    preds = dl.predict(model, X, batch_size=128)
    model.eval()
    assert torch.equal(preds, model(X).argmax(1)) and not model.training
