import itertools

import dlbook as dl

H = dl.hpo


def _run(params):
    """A fake training run: accuracy rises with epochs, best at lr = 0.01."""
    quality = 1 - abs(params["lr"] - 0.01) * 10
    for epoch in itertools.count(1):
        yield quality * (1 - 0.5**epoch)


def test_grid_tries_every_combination_for_the_same_epochs():
    search = H.grid_search(_run, {"lr": [0.001, 0.01, 0.1], "bs": [32, 64]}, num_epochs=3)
    assert len(search.trials) == 6 and search.epochs == 18
    assert search.best.params["lr"] == 0.01
    curve = search.best_so_far()
    assert len(curve) == 18 and curve == sorted(curve)


def test_optuna_stays_within_the_epoch_budget_and_is_seeded():
    space = {"lr": ("log", 1e-3, 1e-1), "bs": ("choice", [32, 64])}
    a = H.optuna_search(_run, space, num_epochs=3, epoch_budget=18, seed=0)
    b = H.optuna_search(_run, space, num_epochs=3, epoch_budget=18, seed=0)
    assert a.epochs == 18
    assert [t.params for t in a.trials] == [t.params for t in b.trials]
    assert all(len(t.val_acc) == 3 for t in a.trials if not t.pruned)
    assert abs(a.best.params["lr"] - 0.01) < 0.05
