"""A deployable model package: safetensors weights plus a JSON model card, loaded without pickle."""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
from pathlib import Path
from typing import Annotated, Any, ClassVar, Protocol

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from torch import nn

from .checkpoint import FORMAT, CheckpointError, checkpoint_paths, load_model, save_checkpoint
from .data import MNIST_MEAN, MNIST_STD, NUM_VAL, mnist_files
from .models import MODELS, build_model, count_parameters


class RecipeLike(Protocol):
    """What a model card reads from a recipe (a `zoo.Recipe`, a dataclass)."""

    __dataclass_fields__: ClassVar[dict[str, Any]]
    model: str
    model_kwargs: dict


WEIGHTS = "model"  # the package holds model.safetensors and model.json
FILES = (f"{WEIGHTS}.safetensors", f"{WEIGHTS}.json")
ENCRYPTED = ".enc"  # an encrypted package holds model.safetensors.enc and model.json.enc
CARD_DIGEST = "card_sha256"  # the card's own SHA-256, stored in the card, over all other fields

# The model card's schema: what loading and serving read from it, checked on load. Other fields
# (recipe, data, intended use, ...) are documentation and may be anything JSON.
Finite = Annotated[float, Field(allow_inf_nan=False)]


class Architecture(BaseModel):
    """Which model to build, with which keyword arguments, and its parameter count."""

    model: str
    model_kwargs: dict[str, Any]
    parameters: int = Field(ge=1)

    @model_validator(mode="after")
    def _buildable(self) -> Architecture:
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; choose one of {', '.join(MODELS)}")
        accepted = inspect.signature(MODELS[self.model]).parameters
        for key, value in self.model_kwargs.items():
            if key not in accepted:
                raise ValueError(
                    f"{self.model} takes no keyword {key!r}; it takes {', '.join(accepted)}"
                )
            if isinstance(value, int) and not isinstance(value, bool) and value < 1:
                raise ValueError(f"{key}={value}: sizes and counts must be at least 1")
            if isinstance(value, float) and not 0 <= value < 1:
                raise ValueError(f"{key}={value}: rates must lie in [0, 1)")
        return self


class Normalization(BaseModel):
    mean: Finite
    std: Finite = Field(gt=0)


class InputSpec(BaseModel):
    model_config = ConfigDict(extra="allow")
    normalization: Normalization


class Metrics(BaseModel):
    model_config = ConfigDict(extra="allow")
    test_acc: float | None = Field(default=None, ge=0, le=1)


class Privacy(BaseModel):
    """The privacy budget of a model trained with differential privacy (DP-SGD)."""

    model_config = ConfigDict(extra="forbid")
    mechanism: str = Field(min_length=1)
    epsilon: Finite = Field(gt=0)
    delta: float = Field(ge=0, lt=1)
    accountant: str = Field(min_length=1)  # e.g. "rdp", "prv"
    max_grad_norm: Finite = Field(gt=0)  # per-example clipping norm
    noise_multiplier: Finite = Field(ge=0)
    sample_rate: float = Field(gt=0, le=1)  # Poisson sampling probability of each example
    epochs: int = Field(ge=1)


class ModelCard(BaseModel):
    """The fields of a model card that code reads (`model_card` writes them all)."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    architecture: Architecture
    input: InputSpec
    metrics: Metrics
    privacy: Privacy | None = None  # only for a model trained with differential privacy


def card_digest(card: dict) -> str:
    """SHA-256 of a card's canonical JSON (sorted keys), without its own digest field."""
    fields = {k: v for k, v in card.items() if k != CARD_DIGEST}
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def validate_card(card: object) -> ModelCard:
    """The card checked against the schema, and its architecture against its parameter count.

    Raises CheckpointError with one line naming every problem.
    """
    if not isinstance(card, dict):
        raise CheckpointError(f"the model card must be a JSON object; got {type(card).__name__}")
    try:
        valid = ModelCard.model_validate(card)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'card'}: {e['msg']}" for e in err.errors()
        )
        raise CheckpointError(f"the model card is invalid: {problems}") from None
    arch = valid.architecture
    try:
        with torch.device("meta"):  # shapes only: no memory, whatever sizes the card names
            count = count_parameters(build_model(arch.model, **arch.model_kwargs))
    except (TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"the model card's architecture cannot be built: {err}") from None
    if count != arch.parameters:
        raise CheckpointError(
            f"the model card declares {arch.parameters:,} parameters but its architecture "
            f"{arch.model}({arch.model_kwargs}) has {count:,}"
        )
    return valid


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
    """Write model.safetensors and model.json (the card with its own SHA-256, and the weights'
    SHA-256) to folder; the card must pass `validate_card`."""
    card = json.loads(json.dumps({k: v for k, v in card.items() if k != CARD_DIGEST}))
    validate_card(card)  # as JSON will read it back: tuples are lists, keys strings
    folder.mkdir(parents=True, exist_ok=True)
    save_checkpoint(folder / WEIGHTS, model, meta={**card, CARD_DIGEST: card_digest(card)})
    return folder


def read_card(folder: Path) -> ModelCard:
    """The package's model card, its digest verified and its fields validated (CheckpointError)."""
    path = checkpoint_paths(folder / WEIGHTS)[1]
    try:
        text = path.read_bytes()
    except OSError as err:
        raise CheckpointError(f"cannot read the model card {path}: {err.strerror}") from None
    return _card_of(_record(text, str(path)), str(path))


def _record(text: bytes, where: str) -> dict:
    """The package's JSON record (the card under "meta"), parsed; CheckpointError if it is not."""
    try:
        record = json.loads(text)
    except (ValueError, RecursionError) as err:  # also numbers Python will not parse
        raise CheckpointError(f"{where} is not valid JSON ({err})") from None
    if not isinstance(record, dict):
        raise CheckpointError(f"{where} is not a JSON object holding a model card")
    return record


def _card_of(record: dict, where: str) -> ModelCard:
    """The record's card, its digest verified and its fields validated (CheckpointError)."""
    card = record.get("meta")
    if isinstance(card, dict):
        if CARD_DIGEST not in card:
            raise CheckpointError(
                f"the model card in {where} carries no digest ({CARD_DIGEST}): "
                "write the package again with save_package"
            )
        if card[CARD_DIGEST] != card_digest(card):
            raise CheckpointError(
                f"the model card in {where} does not match its digest: "
                "it was modified after saving; refusing to load it"
            )
    return validate_card(card)


def is_encrypted(folder: Path | str) -> bool:
    """Whether `folder` holds an encrypted package (`dlbook.vault`)."""
    return any((Path(folder) / f"{name}{ENCRYPTED}").exists() for name in FILES)


def load_package(folder: Path | str, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Verify and validate the card, rebuild the model from it and load verified weights; never
    unpickles. Returns (model, card with the weights' "sha256"); CheckpointError if anything
    is missing, altered or malformed."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"model folder {folder} does not exist")
    if is_encrypted(folder):
        raise CheckpointError(
            f"{folder} holds an encrypted package: load it with its key "
            "(dlbook.vault.open_package; serve --key-file or DLBOOK_MODEL_KEY)"
        )
    arch = read_card(folder).architecture
    weights = checkpoint_paths(folder / WEIGHTS)[0]
    if weights.is_file() and weights.stat().st_size < arch.parameters:  # < 1 byte per parameter
        raise CheckpointError(
            f"the model card declares {arch.parameters:,} parameters but {weights.name} holds "
            f"{weights.stat().st_size:,} bytes"
        )
    model, record = load_model(
        folder / WEIGHTS, lambda _: build_model(arch.model, **arch.model_kwargs)
    )
    return model.to(device).eval(), {**record["meta"], "sha256": record["sha256"]}


def load_package_bytes(
    files: dict[str, bytes], where: str, device: torch.device | str = "cpu"
) -> tuple[nn.Module, dict]:
    """`load_package` for a package held in memory (`files`: FILES -> their bytes, as decrypted
    by `dlbook.vault`): the same checks, nothing written to disk. `where` names it in errors."""
    record = _record(files[FILES[1]], f"{where}/{FILES[1]}")
    if record.get("format") != FORMAT:
        raise CheckpointError(f"{where}/{FILES[1]} is not a {FORMAT} record")
    arch = _card_of(record, f"{where}/{FILES[1]}").architecture
    weights = files[FILES[0]]
    if hashlib.sha256(weights).hexdigest() != record.get("sha256"):
        raise CheckpointError(
            f"{where}/{FILES[0]} does not match the SHA-256 in {FILES[1]}: refusing to load it"
        )
    try:
        tensors = load_safetensors(weights)
    except SafetensorError as err:
        raise CheckpointError(f"{where}/{FILES[0]} is not readable safetensors ({err})") from None
    model = build_model(arch.model, **arch.model_kwargs)
    state = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{where} does not fit {arch.model}: {err}") from None
    return model.to(device).eval(), {**record["meta"], "sha256": record["sha256"]}
