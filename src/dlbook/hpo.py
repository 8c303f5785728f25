"""Hyperparameter search on a budget of epochs: a full grid against Optuna (TPE with pruning)."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm import TqdmWarning

from .data import MNISTSplits, iterate_batches
from .training import evaluate_tensors, train_one_epoch

with warnings.catch_warnings():  # optuna imports tqdm.auto, which warns without ipywidgets
    warnings.simplefilter("ignore", TqdmWarning)
    import optuna

# A training run as a generator: yields the validation accuracy after each epoch.
RunFactory = Callable[[dict[str, Any]], Iterator[float]]


@dataclass
class Trial:
    """One configuration and the validation accuracy after each epoch it was trained."""

    params: dict[str, Any]
    val_acc: list[float] = field(default_factory=list)
    pruned: bool = False  # stopped early by the pruner (or by the end of the budget)


@dataclass
class Search:
    """Every trial of a search, in order."""

    trials: list[Trial]

    @property
    def epochs(self) -> int:
        """Epochs spent, over all trials."""
        return sum(len(t.val_acc) for t in self.trials)

    def best_so_far(self) -> list[float]:
        """The best validation accuracy seen after each epoch spent (one entry per epoch)."""
        curve: list[float] = []
        for acc in itertools.chain.from_iterable(t.val_acc for t in self.trials):
            curve.append(max(acc, curve[-1]) if curve else acc)
        return curve

    @property
    def best(self) -> Trial:
        """The finished trial with the best final validation accuracy."""
        done = [t for t in self.trials if not t.pruned] or self.trials
        return max(done, key=lambda t: t.val_acc[-1])


def epochs_of(
    build: Callable[[], nn.Module], data: MNISTSplits, params: dict[str, Any], seed: int = 0
) -> Iterator[float]:
    """Train build() with AdamW at params' lr, batch_size, weight_decay; yield val accuracy."""
    torch.manual_seed(seed)
    model = build()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=params["lr"], weight_decay=params["weight_decay"]
    )
    for epoch in itertools.count():
        batches = iterate_batches(
            data.X_train, data.y_train, params["batch_size"], shuffle=True, seed=seed + epoch
        )
        train_one_epoch(model, batches, optimizer)
        yield evaluate_tensors(model, data.X_val, data.y_val)[1]


def grid_search(run: RunFactory, grid: dict[str, list], num_epochs: int) -> Search:
    """Every combination of the grid's values, each trained for num_epochs."""
    trials = []
    for values in itertools.product(*grid.values()):
        trial = Trial(dict(zip(grid, values)))
        trial.val_acc = list(itertools.islice(run(trial.params), num_epochs))
        trials.append(trial)
    return Search(trials)


def suggest(trial: optuna.Trial, space: dict[str, tuple]) -> dict[str, Any]:
    """Sample params from a space: ('log', low, high) floats or ('choice', [values])."""
    params = {}
    for name, (kind, *args) in space.items():
        if kind == "log":
            params[name] = trial.suggest_float(name, args[0], args[1], log=True)
        else:
            params[name] = trial.suggest_categorical(name, args[0])
    return params


def optuna_search(
    run: RunFactory, space: dict[str, tuple], num_epochs: int, epoch_budget: int, seed: int = 0
) -> Search:
    """TPE sampling with median pruning after each epoch, until epoch_budget epochs are spent."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=4),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0),
    )
    trials: list[Trial] = []
    spent = 0
    while spent < epoch_budget:
        ot = study.ask()
        trial = Trial(suggest(ot, space))
        trials.append(trial)
        for epoch, acc in enumerate(itertools.islice(run(trial.params), num_epochs)):
            trial.val_acc.append(acc)
            spent += 1
            ot.report(acc, epoch)
            if epoch + 1 < num_epochs and (ot.should_prune() or spent >= epoch_budget):
                trial.pruned = True
                break
        if trial.pruned:
            study.tell(ot, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(ot, trial.val_acc[-1])
    return Search(trials)
