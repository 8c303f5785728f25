"""Runtime: device choice, seeding, paths and the validated chapter config."""

from __future__ import annotations

import dataclasses
import hashlib
import operator
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from typing_extensions import Self

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
    np.random.seed(seed % 2**32)  # noqa: NPY002 (the legacy global RNG is what we seed)
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


class _Same:
    """The smoke value of a field that keeps its value in a smoke run."""

    def __repr__(self) -> str:
        return "SAME"


SAME: Any = _Same()


_COMPARISONS = {
    "gt": (">", operator.gt),
    "ge": (">=", operator.ge),
    "lt": ("<", operator.lt),
    "le": ("<=", operator.le),
}


@dataclass(frozen=True)
class Check:
    """What a parameter accepts: bounds, choices, and its value in a smoke run."""

    ge: float | None = None  # value >= ge
    gt: float | None = None  # value > gt
    le: float | None = None  # value <= le
    lt: float | None = None  # value < lt
    choices: tuple[Any, ...] | None = None
    smoke: Any = SAME  # the value a smoke run uses instead (SAME: the same value)

    def wanted(self, kind: str) -> str:
        """What a valid value is, in words: 'an integer >= 1', 'a number in (0, 1]', ..."""
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        noun = {"int": "an integer", "float": "a finite number", "bool": "True or False"}
        bounds = " and ".join(f"{symbol} {bound:g}" for symbol, _, bound in self._bounds())
        return f"{noun.get(kind, 'a string')} {bounds}".strip()

    def _bounds(self) -> list[tuple[str, Callable[[Any, Any], bool], float]]:
        """The declared bounds as (symbol, comparison, bound), lower ones first."""
        return [
            (symbol, op, getattr(self, name))
            for name, (symbol, op) in _COMPARISONS.items()
            if getattr(self, name) is not None
        ]

    def accepts(self, kind: str, value: Any) -> bool:
        """Whether `value` has the declared type and lies within the bounds and choices."""
        if self.choices is not None:
            return value in self.choices
        if kind == "bool":
            return isinstance(value, bool)
        if kind == "int" and not _is_int(value):
            return False
        if kind == "float" and not (_is_int(value) or isinstance(value, (float, np.floating))):
            return False
        if kind == "str":
            return isinstance(value, str)
        return bool(np.isfinite(value)) and all(op(value, bound) for _, op, bound in self._bounds())


def param(
    default: Any,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: tuple[Any, ...] | None = None,
    smoke: Any = SAME,
) -> Any:
    """A config field that declares what it accepts and its smoke-run value.

    `train_size: int = param(55_000, ge=1, smoke=2_000)`: the type comes from the annotation.
    """
    check = Check(ge=ge, gt=gt, le=le, lt=lt, choices=choices, smoke=smoke)
    return field(default=default, metadata={"check": check})


def _kind(annotation: Any) -> str:
    """'int', 'float', 'bool' or 'str' from a field's annotation (a type or its string)."""
    name = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    return name if name in ("int", "float", "bool") else "str"


@dataclass(frozen=True)
class Config:
    """A chapter's parameters, validated once; built from the papermill `parameters` cell.

    A chapter adds its own fields with `param(...)`; each field declares what it accepts and,
    optionally, the value a smoke run uses. Untyped defaults accept any value of their type.
    """

    device: str = param("auto", choices=DEVICES)  # auto picks cuda, then mps, then cpu
    num_epochs: int = param(5, ge=1, smoke=1)  # passes over the training set
    batch_size: int = param(128, ge=1)  # big enough to keep a CPU busy, small enough to generalize
    lr: float = param(1e-3, gt=0)  # Adam's usual default
    seed: int = param(0, ge=0)  # one seed for data order, initialization and dropout
    smoke: bool = False  # a small subset and one epoch: minutes, for CI and quick checks
    progress: bool = False  # tqdm bars; off by default so committed outputs stay clean

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # subclasses get their extra fields checked too
            check = f.metadata.get("check", Check())
            kind, value = _kind(f.type), getattr(self, f.name)
            if not check.accepts(kind, value):
                raise ValueError(
                    f"parameter {f.name}={value!r} is invalid: it must be {check.wanted(kind)}"
                )

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Self:
        """Build from a dict of parameters (e.g. `globals()` of the parameters cell).

        Unknown keys are ignored. With smoke=True, fields that declare a smoke value take it.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        cfg = cls(**{k: v for k, v in params.items() if k in names})
        return cfg.smoke_version() if cfg.smoke else cfg

    def smoke_version(self) -> Self:
        """This config with every declared smoke value applied."""
        changes = {
            f.name: f.metadata["check"].smoke
            for f in dataclasses.fields(self)
            if "check" in f.metadata and f.metadata["check"].smoke is not SAME
        }
        return dataclasses.replace(self, **changes)

    @property
    def torch_device(self) -> torch.device:
        """The resolved device (raises if the requested one is unavailable)."""
        return resolve_device(self.device)


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)
