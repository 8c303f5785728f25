import pickle

import pytest
import torch

import dlbook as dl
from dlbook.checkpoint import CheckpointError
from dlbook.package import load_package, model_card, save_package


@pytest.fixture
def package(tmp_path):
    torch.manual_seed(0)
    model = dl.MLP(hidden=16)
    recipe = dl.Recipe("mlp", {"hidden": 16})
    card = model_card(model, recipe, {"test_acc": 0.9}, "1.2.3")
    return save_package(tmp_path / "pkg", model, card), model


def test_card_describes_the_model(package):
    folder, model = package
    loaded, card = load_package(folder)
    assert card["version"] == "1.2.3" and card["architecture"]["parameters"] == 784 * 16 + 16 + 170
    assert card["input"]["normalization"] == {"mean": dl.MNIST_MEAN, "std": dl.MNIST_STD}
    assert card["metrics"]["test_acc"] == 0.9 and "MNIST" in card["data"]["dataset"]
    assert len(card["sha256"]) == 64
    X = torch.randn(4, 1, 28, 28)
    assert torch.equal(loaded(X), model.eval()(X))


def test_loading_never_unpickles(package, monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    load_package(package[0])


def test_missing_or_altered_package(package, tmp_path):
    folder, _ = package
    with pytest.raises(CheckpointError, match="does not exist"):
        load_package(tmp_path / "nowhere")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_package(folder)
