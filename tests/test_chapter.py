from dataclasses import dataclass

import pytest
import torch

import dlbook as dl


@dataclass(frozen=True)
class ChapterConfig(dl.Config):
    train_size: int = dl.param(55_000, ge=1, smoke=2_000)


def test_setup_validates_seeds_and_prints(capsys):
    cfg, device, data = dl.setup(ChapterConfig, {"device": "cpu", "seed": 3, "lr": 0.1}, data=False)
    assert (cfg.seed, cfg.lr, cfg.train_size) == (3, 0.1, 55_000) and device == torch.device("cpu")
    assert data is None
    first = torch.rand(3)
    dl.seed_everything(3)
    assert torch.equal(first, torch.rand(3))  # setup seeded
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("ChapterConfig(device='cpu'") and lines[1].startswith(
        "device: cpu | torch"
    )


def test_setup_loads_the_smoke_subset(monkeypatch, mnist):
    monkeypatch.setattr(dl.chapter, "load_mnist", lambda device: mnist)
    cfg, _, data = dl.setup(ChapterConfig, {"smoke": True, "num_epochs": 9})
    assert (cfg.num_epochs, cfg.train_size) == (1, 2_000)  # declared smoke values
    assert len(data.X_train) == 2_000 and len(data.X_test) == 1_000
    _, _, full = dl.setup(ChapterConfig, {})
    assert full is mnist


def test_setup_names_a_bad_parameter_before_loading_anything(monkeypatch):
    monkeypatch.setattr(dl.chapter, "load_mnist", lambda device: pytest.fail("loaded data"))
    with pytest.raises(ValueError, match="train_size=0 is invalid: it must be an integer >= 1"):
        dl.setup(ChapterConfig, {"train_size": 0})
