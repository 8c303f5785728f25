"""Checkpoints without pickle: tensors in safetensors, everything else in JSON beside them."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from .runtime import file_digest

FORMAT = "dlbook-checkpoint/1"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated, tampered with or does not fit the model."""


def checkpoint_paths(path: Path | str) -> tuple[Path, Path]:
    """(tensors file, metadata file) of a checkpoint named by its stem or either file."""
    path = Path(path)
    if path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Write through a temporary file and rename, so a crash never leaves half a file."""
    part = path.with_name(path.name + ".part")
    write(part)
    os.replace(part, path)


def save_checkpoint(
    path: Path | str,
    model: nn.Module,
    meta: dict | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler=None,
    history: dict[str, list[float]] | None = None,
) -> Path:
    """Save model (and optionally optimizer, scheduler, history) to <path>.safetensors + .json."""
    tensors_path, meta_path = checkpoint_paths(path)
    tensors_path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    record: dict[str, Any] = {"format": FORMAT, "meta": meta or {}}
    if optimizer is not None:
        state = optimizer.state_dict()
        for index, slots in state["state"].items():
            for key, value in slots.items():
                tensors[f"optimizer.{index}.{key}"] = torch.as_tensor(value).detach().cpu().clone()
        record["optimizer_param_groups"] = state["param_groups"]
    if scheduler is not None:
        record["scheduler"] = scheduler.state_dict()
    if history is not None:
        record["history"] = history
    atomic_write(tensors_path, lambda p: save_file(tensors, str(p)))
    record["sha256"] = file_digest(tensors_path)
    atomic_write(meta_path, lambda p: p.write_text(json.dumps(record, indent=1)))
    return tensors_path


def load_checkpoint(path: Path | str) -> tuple[dict[str, Tensor], dict]:
    """Verified (tensors, record); raises CheckpointError if anything is missing or altered."""
    tensors_path, meta_path = checkpoint_paths(path)
    for file in (tensors_path, meta_path):
        if not file.is_file():
            raise CheckpointError(f"checkpoint file {file} is missing")
    try:
        record = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(
            f"checkpoint metadata {meta_path} is not valid JSON ({err})"
        ) from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path} is not a {FORMAT} checkpoint")
    if file_digest(tensors_path) != record.get("sha256"):
        raise CheckpointError(
            f"{tensors_path} does not match the SHA-256 in {meta_path.name}: "
            "it was truncated or modified; refusing to load it"
        )
    try:
        tensors = load_file(str(tensors_path))
    except SafetensorError as err:
        raise CheckpointError(
            f"{tensors_path} is not a readable safetensors file ({err})"
        ) from None
    return tensors, record


def model_tensors(path: Path | str) -> dict[str, Tensor]:
    """A verified checkpoint's model tensors, named as in the model's state_dict."""
    tensors, _ = load_checkpoint(path)
    return {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}


def _strip(tensors: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def _load_state(model: nn.Module, tensors: dict[str, Tensor], path: Path | str) -> None:
    """Copy a checkpoint's model tensors into `model`, strictly."""
    try:
        model.load_state_dict(_strip(tensors, "model."), strict=True)
    except RuntimeError as err:
        raise CheckpointError(
            f"checkpoint {path} does not fit {type(model).__name__}: {err}"
        ) from None


def load_weights(path: Path | str, model: nn.Module) -> dict:
    """Load a checkpoint's weights into `model` (strictly); return its metadata."""
    tensors, record = load_checkpoint(path)
    _load_state(model, tensors, path)
    return record["meta"]


def load_model(path: Path | str, build: Callable[[dict], nn.Module]) -> tuple[nn.Module, dict]:
    """Verify and read the checkpoint once, build the model from its metadata, load its weights.

    Returns (model, record); `build` maps the saved metadata to a fresh model.
    """
    tensors, record = load_checkpoint(path)
    model = build(record["meta"])
    _load_state(model, tensors, path)
    return model, record


def load_training_state(
    path: Path | str, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler=None
):
    """Restore model, optimizer and scheduler; return (the history as a dict, next epoch)."""
    tensors, record = load_checkpoint(path)
    model.load_state_dict(_strip(tensors, "model."), strict=True)
    if "optimizer_param_groups" not in record:
        raise CheckpointError(f"checkpoint {path} holds weights only; it cannot resume training")
    state: dict[int, dict[str, Tensor]] = {}
    for key, value in _strip(tensors, "optimizer.").items():
        index, slot = key.split(".", 1)
        state.setdefault(int(index), {})[slot] = value
    groups = record["optimizer_param_groups"]
    for group in groups:  # JSON turned tuples into lists
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    if scheduler is not None:
        scheduler.load_state_dict(record["scheduler"])
    history = record["history"]
    return history, len(history["train_loss"])
