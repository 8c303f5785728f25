"""dlbook: the helper package of the executable deep-learning book.

One concern per module: `runtime` (device, seeding, config, paths), `data` (MNIST),
`models`, `training`, `checkpoint`, `zoo` (the book's trained models), `plotting`,
`execute` (papermill runner), `validation` (what `pytest --nbval` compares, and
how closely). The names below are re-exported so chapters can write
`import dlbook as dl` and `dl.fit(...)`.
"""

from . import metrics, plotting, scratch
from .checkpoint import CheckpointError, load_checkpoint, load_weights, save_checkpoint
from .data import (
    MNIST_MEAN,
    MNIST_STD,
    DataError,
    MNISTSplits,
    ensure_mnist,
    iterate_batches,
    load_mnist,
    per_sample_loader,
)
from .models import CNN, MLP, build_model, count_parameters, predict
from .runtime import Config, artifacts_dir, data_dir, resolve_device, seed_everything
from .training import History, evaluate, evaluate_tensors, fit, train_one_epoch
from .validation import glue
from .zoo import (
    RECIPES,
    Recipe,
    TrainedModel,
    load_trained,
    save_trained,
    train_recipe,
    trained_model,
)

__version__ = "0.1.0"
