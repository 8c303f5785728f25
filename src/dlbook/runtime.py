"""Runtime: device choice, seeding, paths and the validated chapter config."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

DEVICES = ("auto", "cpu", "cuda", "mps")


def available_devices() -> list[str]:
    """Names of the devices this machine can run on, best first."""
    found = []
    if torch.cuda.is_available():
        found.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append("mps")
    return found + ["cpu"]


def resolve_device(name: str = "auto") -> torch.device:
    """Turn 'auto'|'cpu'|'cuda'|'mps' into a torch.device; auto picks cuda, then mps, then cpu."""
    if name not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}; got {name!r}")
    available = available_devices()
    if name == "auto":
        return torch.device(available[0])
    if name not in available:
        raise ValueError(
            f"device {name!r} was requested but is not available on this machine; "
            f"available: {', '.join(available)}. Use device='auto' or one of those."
        )
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (all devices) so runs repeat."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds CUDA and MPS generators


def repo_root() -> Path | None:
    """The book's checkout (the folder with _toc.yml), or None when installed elsewhere."""
    candidates = [Path(__file__).resolve().parents[2], *Path.cwd().resolve().parents, Path.cwd()]
    for folder in candidates:
        if (folder / "_toc.yml").is_file():
            return folder
    return None


def _home_folder(env: str, name: str) -> Path:
    """`$env` if set, else `<repo>/<name>`, else `~/.dlbook/<name>`; never the working directory."""
    if os.environ.get(env):
        return Path(os.environ[env]).expanduser().resolve()
    root = repo_root()
    return (root / name) if root is not None else Path.home() / ".dlbook" / name


def data_dir() -> Path:
    """Where data sets live: $DLBOOK_DATA_DIR or <repo>/data."""
    return _home_folder("DLBOOK_DATA_DIR", "data")


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file (md5, sha256, ...), read in 1 MiB chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def artifacts_dir() -> Path:
    """Where trained models live: $DLBOOK_ARTIFACTS_DIR or <repo>/artifacts."""
    return _home_folder("DLBOOK_ARTIFACTS_DIR", "artifacts")


@dataclass(frozen=True)
class Config:
    """A chapter's parameters, validated once; built from the papermill `parameters` cell."""

    device: str = "auto"  # auto picks cuda, then mps, then cpu
    num_epochs: int = 5  # passes over the training set
    batch_size: int = 128  # big enough to keep a CPU busy, small enough to generalize
    lr: float = 1e-3  # Adam's usual default
    seed: int = 0  # one seed for data order, initialization and dropout
    smoke: bool = False  # a tiny subset and one epoch: seconds, for CI and quick checks
    progress: bool = False  # tqdm bars; off by default so committed outputs stay clean

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # subclasses get their extra fields checked too
            kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
            _validate(f.name, kind, getattr(self, f.name))

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Config:
        """Build from a dict of parameters (e.g. `globals()` of the parameters cell); unknown keys are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in params.items() if k in names})

    @property
    def torch_device(self) -> torch.device:
        """The resolved device (raises if the requested one is unavailable)."""
        return resolve_device(self.device)


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _validate(name: str, kind: str, value: Any) -> None:
    """Check one parameter by its name and declared type; raise a ValueError that says what is wanted."""
    if name == "device":
        ok, wanted = value in DEVICES, f"one of {', '.join(repr(d) for d in DEVICES)}"
    elif kind == "bool":
        ok, wanted = isinstance(value, bool), "True or False"
    elif kind == "int" and (name.endswith("epochs") or name.endswith("size")):
        ok, wanted = _is_int(value) and value >= 1, "an integer >= 1"
    elif kind == "int":
        ok, wanted = _is_int(value) and value >= 0, "an integer >= 0"
    elif kind == "float":
        ok = _is_int(value) or isinstance(value, (float, np.floating))
        ok = ok and np.isfinite(value) and (value > 0 if "lr" in name else value >= 0)
        wanted = "a finite number > 0" if "lr" in name else "a finite number >= 0"
    else:
        ok, wanted = isinstance(value, str), "a string"
    if not ok:
        raise ValueError(f"parameter {name}={value!r} is invalid: it must be {wanted}")
