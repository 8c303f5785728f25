import torch

import dlbook as dl


def _data(n: int = 256) -> dl.MNISTSplits:
    g = torch.Generator().manual_seed(0)
    X = torch.randn(n, 1, 28, 28, generator=g)
    y = (X.flatten(1)[:, :10]).argmax(1)  # learnable from ten pixels
    return dl.MNISTSplits(X, y, X[:64], y[:64], X[:64], y[:64])


def test_early_stopping_keeps_the_best_validation_epoch():
    torch.manual_seed(0)
    run = dl.ablation.fit_early_stopping(dl.MLP(hidden=32), _data(), num_epochs=6, lr=3e-3)
    acc = run.history.val_acc
    assert run.best_epoch == acc.index(max(acc)) + 1
    _, val_acc = dl.evaluate_tensors(run.model, _data().X_val, _data().y_val)
    assert val_acc == max(acc)


def test_patience_stops_training():
    torch.manual_seed(0)
    run = dl.ablation.fit_early_stopping(
        dl.MLP(hidden=32), _data(), num_epochs=50, lr=1e-6, patience=2
    )
    assert run.history.num_epochs < 50


def test_augment_is_applied_to_training_batches():
    seen = []
    dl.ablation.fit_early_stopping(
        dl.MLP(hidden=8), _data(64), num_epochs=1, augment=lambda X: seen.append(len(X)) or X
    )
    assert sum(seen) == 64


def test_train_steps_fits_a_batch():
    torch.manual_seed(0)
    data = _data(64)
    model = dl.ablation.train_steps(
        dl.MLP(hidden=64), data.X_train, data.y_train, steps=200, lr=3e-3
    )
    assert dl.evaluate_tensors(model, data.X_train, data.y_train)[1] > 0.95
