import json
import pickle

import pytest
import torch

import dlbook as dl
from dlbook.checkpoint import CheckpointError, checkpoint_paths, model_tensors


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = dl.CNN(c1=4, c2=8, hidden=16)
    path = dl.save_checkpoint(tmp_path / "cnn" / "model", model, meta={"note": "test", "acc": 0.5})
    return model, path


def test_round_trip(saved):
    model, path = saved
    clone = dl.CNN(c1=4, c2=8, hidden=16)
    meta = dl.load_weights(path, clone)
    assert meta == {"note": "test", "acc": 0.5}
    for (name, a), b in zip(model.state_dict().items(), clone.state_dict().values()):
        assert torch.equal(a, b), name  # BatchNorm running stats included
    X = torch.randn(8, 1, 28, 28)
    assert torch.equal(dl.predict(model, X), dl.predict(clone, X))


def test_files_are_safetensors_and_json(saved):
    _, path = saved
    tensors, meta = checkpoint_paths(path)
    header_len = int.from_bytes(tensors.read_bytes()[:8], "little")
    header = json.loads(tensors.read_bytes()[8 : 8 + header_len])
    assert "model.features.0.weight" in header
    assert json.loads(meta.read_text())["format"] == "dlbook-checkpoint/1"


def test_loading_never_unpickles(saved, monkeypatch):
    _, path = saved

    def refuse(*args, **kwargs):
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    dl.load_weights(path, dl.CNN(c1=4, c2=8, hidden=16))


def test_tampered_weights_are_refused(saved):
    _, path = saved
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF  # flip one byte inside a weight
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="truncated or modified; refusing to load it"):
        dl.load_weights(path, dl.CNN(c1=4, c2=8, hidden=16))


def test_truncated_weights_are_refused(saved):
    _, path = saved
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(CheckpointError, match="truncated or modified"):
        dl.load_checkpoint(path)


def test_truncated_metadata_is_refused(saved):
    _, path = saved
    meta = checkpoint_paths(path)[1]
    meta.write_text(meta.read_text()[:40])
    with pytest.raises(CheckpointError, match="not valid JSON"):
        dl.load_checkpoint(path)


def test_missing_file_is_named(saved):
    _, path = saved
    checkpoint_paths(path)[1].unlink()
    with pytest.raises(CheckpointError, match=r"model\.json is missing"):
        dl.load_checkpoint(path)


def test_wrong_architecture_is_refused(saved):
    _, path = saved
    with pytest.raises(CheckpointError, match="does not fit MLP"):
        dl.load_weights(path, dl.MLP())


def test_weights_only_checkpoint_cannot_resume(saved):
    from dlbook.checkpoint import load_training_state

    _, path = saved
    model = dl.CNN(c1=4, c2=8, hidden=16)
    with pytest.raises(CheckpointError, match="weights only"):
        load_training_state(path, model, torch.optim.Adam(model.parameters()))


def test_no_partial_files_are_left(saved):
    _, path = saved
    assert not list(path.parent.glob("*.part"))


@pytest.mark.parametrize("content", ["[1, 2]", '"text"', "null", "{}"])
def test_metadata_that_is_not_a_checkpoint_record_is_refused(tmp_path, content):
    path = dl.save_checkpoint(tmp_path / "m", torch.nn.Linear(2, 2))
    path.with_suffix(".json").write_text(content)
    with pytest.raises(dl.CheckpointError, match="is not a dlbook"):
        dl.load_checkpoint(tmp_path / "m")


def test_model_tensors_are_the_state_dict_of_the_saved_model(tmp_path):
    model = dl.build_model("mlp", hidden=8)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.zeros(2, 1, 28, 28)).sum().backward()
    optimizer.step()  # optimizer state is saved too, and must not come back as model tensors
    dl.save_checkpoint(tmp_path / "ckpt", model, {"step": 1}, optimizer=optimizer)
    got = model_tensors(tmp_path / "ckpt")
    assert got.keys() == model.state_dict().keys()
    assert all(torch.equal(got[k], v) for k, v in model.state_dict().items())
