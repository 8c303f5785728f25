import pytest
import torch

import dlbook as dl
from dlbook import zoo

SMALL = {
    "mlp": dl.Recipe("mlp", {"hidden": 16}, num_epochs=1, batch_size=64),
    "cnn": dl.Recipe("cnn", {"c1": 4, "c2": 8, "hidden": 16}, num_epochs=1, batch_size=64),
}


@pytest.fixture
def artifacts(tmp_path, monkeypatch):
    monkeypatch.setenv("DLBOOK_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    monkeypatch.setattr(zoo, "RECIPES", SMALL)
    return tmp_path / "artifacts"


def test_trains_and_caches_when_absent(artifacts, tiny_splits):
    model, meta = dl.trained_model("cnn", data=tiny_splits)
    assert (artifacts / "cnn" / "model.safetensors").is_file()
    assert meta["recipe"]["model"] == "cnn" and 0 <= meta["test_acc"] <= 1
    assert not model.training


def test_loads_from_artifacts_without_training(artifacts, tiny_splits, monkeypatch):
    first, _ = dl.trained_model("mlp", data=tiny_splits)

    def no_training(*args, **kwargs):
        raise AssertionError("the cached model should have been loaded")

    monkeypatch.setattr(zoo, "train_recipe", no_training)
    second, meta = dl.trained_model("mlp", data=tiny_splits)
    X = tiny_splits.X_test
    assert torch.equal(first(X), second(X)) and meta["normalization"] == [
        dl.MNIST_MEAN,
        dl.MNIST_STD,
    ]


def test_a_damaged_cache_is_retrained(artifacts, tiny_splits, capsys):
    dl.trained_model("mlp", data=tiny_splits)
    (artifacts / "mlp" / "model.safetensors").write_bytes(b"garbage")
    model, _ = dl.trained_model("mlp", data=tiny_splits)
    assert "training it again" in capsys.readouterr().out
    assert dl.load_trained(artifacts / "mlp" / "model")[1]["recipe"]["model"] == "mlp"


def test_unknown_name(artifacts):
    with pytest.raises(ValueError, match="unknown model 'rnn'"):
        dl.trained_model("rnn")
