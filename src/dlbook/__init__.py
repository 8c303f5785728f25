"""dlbook: the helper package of the executable deep-learning book.

One concern per module: `runtime` (device, seeding, the validated config), `chapter` (the
setup call after a chapter's parameters), `data` (MNIST), `models`, `history`, `training`,
`checkpoint`, `zoo` (the book's recipes and trained models), `timing`, `profiling`, `sizing`,
`scratch` (from-scratch derivations), `metrics`, `plotting`, `export` (ONNX), `preprocess`,
`package`, `serve` and `workers` (deployment), `vault` and `access` (the package encrypted at
rest, API keys and rate limits), `privacy` (membership inference, DP-SGD) and `homomorphic`
(inference on encrypted images), `execute` (papermill runner), `validation` (what
`pytest --nbval` compares, and how closely).

Chapters write `import dlbook as dl` and then `dl.fit(...)` or `dl.metrics.roc_auc(...)`.
Nothing is imported until it is first used (PEP 562), so `import dlbook` is cheap and the
service (`python -m dlbook.serve`) never loads the plotting or training code.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Re-exported name -> the module that owns it.
_EXPORTS = {
    "CheckpointError": "checkpoint",
    "load_checkpoint": "checkpoint",
    "load_weights": "checkpoint",
    "save_checkpoint": "checkpoint",
    "Setup": "chapter",
    "setup": "chapter",
    "MNIST_MEAN": "data",
    "MNIST_STD": "data",
    "FASHION_CLASSES": "data",
    "FASHION_MNIST_MEAN": "data",
    "FASHION_MNIST_STD": "data",
    "DataError": "data",
    "MNISTSplits": "data",
    "denormalize": "data",
    "ensure_fashion_mnist": "data",
    "ensure_mnist": "data",
    "iterate_batches": "data",
    "load_fashion_mnist": "data",
    "load_mnist": "data",
    "per_sample_loader": "data",
    "History": "history",
    "CNN": "models",
    "MLP": "models",
    "build_model": "models",
    "count_parameters": "models",
    "predict": "models",
    "Config": "runtime",
    "artifacts_dir": "runtime",
    "data_dir": "runtime",
    "param": "runtime",
    "resolve_device": "runtime",
    "seed_everything": "runtime",
    "median_latency": "timing",
    "evaluate": "training",
    "evaluate_tensors": "training",
    "fit": "training",
    "train_one_epoch": "training",
    "glue": "validation",
    "RECIPES": "zoo",
    "LRSearch": "zoo",
    "Recipe": "zoo",
    "TrainedModel": "zoo",
    "load_trained": "zoo",
    "lr_search": "zoo",
    "save_trained": "zoo",
    "train_recipe": "zoo",
    "trained_model": "zoo",
}
_SUBMODULES = {
    "ablation",
    "access",
    "augment",
    "chapter",
    "checkpoint",
    "cli",
    "commcost",
    "data",
    "distill",
    "distributed",
    "execute",
    "export",
    "fsdp",
    "history",
    "homomorphic",
    "hpo",
    "loadtest",
    "metrics",
    "models",
    "package",
    "plotting",
    "preprocess",
    "privacy",
    "profiling",
    "prune",
    "runtime",
    "scratch",
    "serve",
    "sharding",
    "sizing",
    "timing",
    "training",
    "transfer",
    "validation",
    "vault",
    "workers",
    "zoo",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import a re-exported name's module, or a submodule, on first use."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'dlbook' has no attribute {name!r}")
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | _SUBMODULES)


if TYPE_CHECKING:  # what a type checker and an editor see
    from . import metrics, plotting, scratch, sizing  # noqa: F401
    from .chapter import Setup, setup  # noqa: F401
    from .checkpoint import (  # noqa: F401
        CheckpointError,
        load_checkpoint,
        load_weights,
        save_checkpoint,
    )
    from .data import (  # noqa: F401
        FASHION_CLASSES,
        FASHION_MNIST_MEAN,
        FASHION_MNIST_STD,
        MNIST_MEAN,
        MNIST_STD,
        DataError,
        MNISTSplits,
        denormalize,
        ensure_fashion_mnist,
        ensure_mnist,
        iterate_batches,
        load_fashion_mnist,
        load_mnist,
        per_sample_loader,
    )
    from .history import History  # noqa: F401
    from .models import CNN, MLP, build_model, count_parameters, predict  # noqa: F401
    from .runtime import (  # noqa: F401
        Config,
        artifacts_dir,
        data_dir,
        param,
        resolve_device,
        seed_everything,
    )
    from .timing import median_latency  # noqa: F401
    from .training import evaluate, evaluate_tensors, fit, train_one_epoch  # noqa: F401
    from .validation import glue  # noqa: F401
    from .zoo import (  # noqa: F401
        RECIPES,
        LRSearch,
        Recipe,
        TrainedModel,
        load_trained,
        lr_search,
        save_trained,
        train_recipe,
        trained_model,
    )
