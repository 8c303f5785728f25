import json
import pickle

import pytest
import torch

import dlbook as dl
from dlbook.checkpoint import CheckpointError
from dlbook.package import card_digest, load_package, model_card, save_package


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


def test_tampered_card_is_refused(package):
    folder, _ = package
    record = json.loads((folder / "model.json").read_text())
    record["meta"]["input"]["normalization"]["std"] = 1.0  # silently wrong inputs
    (folder / "model.json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="model card .* does not match its digest"):
        load_package(folder)


def test_card_without_digest_is_refused(package):
    folder, _ = package
    record = json.loads((folder / "model.json").read_text())
    del record["meta"]["card_sha256"]
    (folder / "model.json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="carries no digest"):
        load_package(folder)


def resign(folder, edit) -> None:
    """Edit the card in place and re-sign it: a malformed card written by buggy code."""
    path = folder / "model.json"
    record = json.loads(path.read_text())
    record["meta"] = edit(record["meta"])
    if isinstance(record["meta"], dict):
        record["meta"]["card_sha256"] = card_digest(record["meta"])
    path.write_text(json.dumps(record))


def _set(path: str, value):
    """An edit that sets card[a][b]... (dotted path) to value; None deletes the field."""

    def edit(card):
        *parents, last = path.split(".")
        node = card
        for key in parents:
            node = node[key]
        if value is None:
            del node[last]
        else:
            node[last] = value
        return card

    return edit


MALFORMED_CARDS = {
    "unknown architecture": (_set("architecture.model", "resnet"), "unknown model 'resnet'"),
    "wrong keyword": (_set("architecture.model_kwargs", {"hiden": 16}), "no keyword 'hiden'"),
    "negative size": (_set("architecture.model_kwargs", {"hidden": -16}), "at least 1"),
    "wrong parameter count": (_set("architecture.parameters", 12), "declares 12 parameters"),
    "a JSON array": (lambda card: [card], "must be a JSON object"),
    "no name": (_set("name", None), "name: Field required"),
    "no metrics": (_set("metrics", None), "metrics: Field required"),
    "no normalization": (_set("input.normalization", None), "normalization: Field required"),
    "zero std": (_set("input.normalization", {"mean": 0.1, "std": 0}), "greater than 0"),
    "accuracy not a number": (_set("metrics.test_acc", "high"), "metrics.test_acc"),
}


@pytest.mark.parametrize("case", list(MALFORMED_CARDS))
def test_malformed_card_is_a_checkpoint_error(package, case):
    edit, words = MALFORMED_CARDS[case]
    resign(package[0], edit)
    with pytest.raises(CheckpointError, match="model card") as info:
        load_package(package[0])
    assert words in str(info.value) and "\n" not in str(info.value)


def test_a_record_that_is_not_an_object_is_refused(package):
    (package[0] / "model.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="not a JSON object"):
        load_package(package[0])


def test_save_refuses_an_invalid_card(tmp_path):
    model = dl.MLP(hidden=16)
    card = model_card(model, dl.Recipe("mlp", {"hidden": 16}), {"test_acc": 0.9}, "1.0.0")
    card["architecture"]["model_kwargs"] = {"hidden": 32}  # does not describe the model
    with pytest.raises(CheckpointError, match="declares 12,730 parameters"):
        save_package(tmp_path / "pkg", model, card)


PRIVACY = {
    "mechanism": "DP-SGD",
    "epsilon": 2.9,
    "delta": 1e-5,
    "accountant": "rdp",
    "max_grad_norm": 0.1,
    "noise_multiplier": 2.0,
    "sample_rate": 0.07,
    "epochs": 20,
}


def test_a_privacy_block_is_optional_validated_and_kept(tmp_path):
    model = dl.MLP(hidden=16)
    card = model_card(model, dl.Recipe("mlp", {"hidden": 16}), {"test_acc": 0.9}, "1.0.0")
    folder = save_package(tmp_path / "dp", model, {**card, "privacy": PRIVACY})
    assert load_package(folder)[1]["privacy"] == PRIVACY
    for bad in ({"epsilon": 0}, {"delta": 1.5}, {"sample_rate": 0}, {"unknown": 1}):
        with pytest.raises(CheckpointError, match="privacy"):
            save_package(tmp_path / "bad", model, {**card, "privacy": {**PRIVACY, **bad}})
