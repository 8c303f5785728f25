from dataclasses import dataclass

import pytest
import torch

import dlbook as dl
from dlbook import runtime


def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(runtime, "available_devices", lambda: ["cuda", "mps", "cpu"])
    assert dl.resolve_device("auto") == torch.device("cuda")
    monkeypatch.setattr(runtime, "available_devices", lambda: ["mps", "cpu"])
    assert dl.resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(runtime, "available_devices", lambda: ["cpu"])
    assert dl.resolve_device("auto") == torch.device("cpu")


def test_available_devices_reflects_torch(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert runtime.available_devices()[0] == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert runtime.available_devices()[-1] == "cpu" and "cuda" not in runtime.available_devices()


def test_unavailable_device_names_what_is_available(monkeypatch):
    monkeypatch.setattr(runtime, "available_devices", lambda: ["cpu"])
    with pytest.raises(
        ValueError, match=r"'cuda' was requested but is not available.*available: cpu"
    ):
        dl.resolve_device("cuda")
    with pytest.raises(ValueError, match="available: cpu"):
        dl.resolve_device("mps")


def test_unknown_device_is_refused():
    with pytest.raises(ValueError, match="device must be one of auto, cpu, cuda, mps; got 'gpu'"):
        dl.resolve_device("gpu")


def test_seed_everything_repeats():
    dl.seed_everything(3)
    a = torch.randn(5), torch.nn.Linear(4, 2).weight.clone()
    dl.seed_everything(3)
    b = torch.randn(5), torch.nn.Linear(4, 2).weight.clone()
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("num_epochs", 0, "num_epochs=0 is invalid: it must be an integer >= 1"),
        ("num_epochs", 2.5, "an integer >= 1"),
        ("batch_size", -1, "batch_size=-1 is invalid: it must be an integer >= 1"),
        ("lr", 0.0, "lr=0.0 is invalid: it must be a finite number > 0"),
        ("lr", float("nan"), "a finite number > 0"),
        ("lr", "0.1", "a finite number > 0"),
        (
            "device",
            "gpu",
            "device='gpu' is invalid: it must be one of 'auto', 'cpu', 'cuda', 'mps'",
        ),
        ("seed", -3, "an integer >= 0"),
        ("smoke", "yes", "True or False"),
        ("num_epochs", True, "an integer >= 1"),
    ],
)
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        dl.Config(**{field: value})


def test_config_is_frozen_and_built_from_params():
    cfg = dl.Config.from_params({"num_epochs": 3, "lr": 0.01, "unrelated": object()})
    assert (cfg.num_epochs, cfg.lr, cfg.device) == (3, 0.01, "auto")
    with pytest.raises(AttributeError):
        cfg.lr = 1.0


def test_subclass_fields_declare_their_own_constraints():
    @dataclass(frozen=True)
    class ChapterConfig(dl.Config):
        mlp_epochs: int = dl.param(15, ge=1, smoke=1)
        share: float = dl.param(0.01, gt=0, lt=1)
        mode: str = dl.param("fast", choices=("fast", "slow"))
        free: int = -3  # no declaration: any integer

    assert ChapterConfig(mlp_epochs=2).mlp_epochs == 2
    with pytest.raises(ValueError, match="mlp_epochs=0 is invalid: it must be an integer >= 1"):
        ChapterConfig(mlp_epochs=0)
    with pytest.raises(
        ValueError, match="share=1.0 is invalid: it must be a finite number > 0 and < 1"
    ):
        ChapterConfig(share=1.0)
    with pytest.raises(
        ValueError, match="mode='medium' is invalid: it must be one of 'fast', 'slow'"
    ):
        ChapterConfig(mode="medium")
    with pytest.raises(ValueError, match="free=0.5 is invalid: it must be an integer"):
        ChapterConfig(free=0.5)
    assert ChapterConfig(free=-7).free == -7


def test_smoke_values_are_declared_by_the_fields():
    @dataclass(frozen=True)
    class ChapterConfig(dl.Config):
        train_size: int = dl.param(55_000, ge=1, smoke=2_000)
        repeats: int = dl.param(50, ge=1)

    full = ChapterConfig.from_params({"num_epochs": 4, "train_size": 30_000})
    assert (full.num_epochs, full.train_size, full.repeats) == (4, 30_000, 50)
    smoke = ChapterConfig.from_params({"smoke": True, "num_epochs": 4, "repeats": 7})
    assert (smoke.num_epochs, smoke.train_size, smoke.repeats, smoke.smoke) == (1, 2_000, 7, True)


def test_config_device_resolution(monkeypatch):
    monkeypatch.setattr(runtime, "available_devices", lambda: ["cpu"])
    assert dl.Config(device="cpu").torch_device == torch.device("cpu")
    with pytest.raises(ValueError, match="not available"):
        _ = dl.Config(device="cuda").torch_device


def test_folders_follow_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DLBOOK_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("DLBOOK_ARTIFACTS_DIR", str(tmp_path / "a"))
    assert dl.data_dir() == tmp_path / "d" and dl.artifacts_dir() == tmp_path / "a"


def test_default_folders_are_in_the_repo_not_the_working_directory(monkeypatch, tmp_path):
    monkeypatch.delenv("DLBOOK_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    repo = runtime.repo_root()
    assert repo is not None and (repo / "_toc.yml").is_file()
    assert dl.data_dir() == repo / "data"


def test_file_digest_matches_hashlib_across_chunks(tmp_path):
    import hashlib
    import os

    path = tmp_path / "blob"
    data = os.urandom(3 * (1 << 20) + 7)  # three full 1 MiB chunks and a tail
    path.write_bytes(data)
    for algorithm in ("md5", "sha256"):
        assert runtime.file_digest(path, algorithm) == hashlib.new(algorithm, data).hexdigest()
