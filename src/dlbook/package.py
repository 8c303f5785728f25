"""A deployable model package: safetensors weights plus a JSON model card, loaded without pickle."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from .checkpoint import CheckpointError, load_model, save_checkpoint
from .data import MNIST_MEAN, MNIST_STD, NUM_VAL, mnist_files
from .models import build_model, count_parameters


class RecipeLike(Protocol):
    """What a model card reads from a recipe (a `zoo.Recipe`, a dataclass)."""

    __dataclass_fields__: ClassVar[dict[str, Any]]
    model: str
    model_kwargs: dict


WEIGHTS = "model"  # the package holds model.safetensors and model.json


def model_card(model: nn.Module, recipe: RecipeLike, metrics: dict, version: str) -> dict:
    """Everything a user of the weights needs to know, as JSON-ready data."""
    return {
        "name": f"dlbook-mnist-{recipe.model}",
        "version": version,
        "architecture": {
            "model": recipe.model,
            "model_kwargs": recipe.model_kwargs,
            "parameters": count_parameters(model),
        },
        "recipe": dataclasses.asdict(recipe),
        "input": {
            "shape": ["batch", 1, 28, 28],
            "dtype": "float32",
            "pixels": "white ink on black, in [0, 1], digit centred by centre of mass "
            "in a 20x20 box, then standardized",
            "normalization": {"mean": MNIST_MEAN, "std": MNIST_STD},
        },
        "output": {"shape": ["batch", 10], "meaning": "logits of the digits 0-9"},
        "metrics": metrics,
        "data": {
            "dataset": "MNIST (LeCun, Cortes and Burges)",
            "train": f"the first {60_000 - NUM_VAL:,} of the 60,000 training images",
            "validation": f"the last {NUM_VAL:,} training images",
            "test": "the official 10,000 test images, evaluated once",
            "files_md5": mnist_files(),
        },
        "software": {"torch": torch.__version__.split("+")[0]},
        "intended_use": "teaching; recognizing single handwritten digits 0-9",
        "limitations": "trained on centred, size-normalized digits; other inputs (letters, "
        "several digits, photos of scenes) give confident nonsense",
    }


def save_package(folder: Path, model: nn.Module, card: dict) -> Path:
    """Write model.safetensors and model.json (the card, with the weights' SHA-256) to folder."""
    folder.mkdir(parents=True, exist_ok=True)
    save_checkpoint(folder / WEIGHTS, model, meta=card)
    return folder


def load_package(folder: Path | str, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model from its card and load verified weights; never unpickles."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"model folder {folder} does not exist")
    model, record = load_model(
        folder / WEIGHTS,
        lambda card: build_model(
            card["architecture"]["model"], **card["architecture"]["model_kwargs"]
        ),
    )
    return model.to(device).eval(), {**record["meta"], "sha256": record["sha256"]}
