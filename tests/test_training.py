import pytest
import torch
import torch.nn.functional as F

import dlbook as dl
from dlbook.zoo import make_optimizer


def test_evaluate_matches_a_direct_computation(tiny_splits):
    torch.manual_seed(0)
    model = dl.MLP()
    loss, acc = dl.evaluate_tensors(model, tiny_splits.X_val, tiny_splits.y_val, batch_size=33)
    model.eval()
    with torch.no_grad():
        logits = model(tiny_splits.X_val)
    assert loss == pytest.approx(F.cross_entropy(logits, tiny_splits.y_val).item(), rel=1e-5)
    assert acc == pytest.approx((logits.argmax(1) == tiny_splits.y_val).double().mean().item())


def test_evaluate_accepts_a_dataloader(tiny_splits):
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(tiny_splits.X_val, tiny_splits.y_val), batch_size=7
    )
    model = dl.MLP()
    assert dl.evaluate(model, loader) == pytest.approx(
        dl.evaluate_tensors(model, tiny_splits.X_val, tiny_splits.y_val), rel=1e-6
    )


def test_fit_learns_and_records_every_epoch(tiny_splits):
    torch.manual_seed(0)
    model = dl.MLP()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    history = dl.fit(model, tiny_splits, optimizer, num_epochs=4, batch_size=32)
    assert history.num_epochs == 4 and len(history.val_acc) == len(history.seconds) == 4
    assert history.train_loss[-1] < history.train_loss[0]
    assert all(s > 0 for s in history.seconds)
    assert list(history.to_frame().index) == [1, 2, 3, 4]


def _run(tiny_splits, num_epochs, checkpoint=None, resume=False):
    recipe = dl.Recipe("mlp", {"dropout": 0.3}, num_epochs=3, batch_size=64, lr=1e-2)
    dl.seed_everything(0)
    model = dl.build_model("mlp", **recipe.model_kwargs)
    optimizer, scheduler = make_optimizer(recipe, model, steps_per_epoch=7)
    history = dl.fit(
        model,
        tiny_splits,
        optimizer,
        scheduler=scheduler,
        num_epochs=num_epochs,
        batch_size=64,
        seed=5,
        checkpoint=checkpoint,
        resume=resume,
    )
    return model, optimizer, history


def test_resume_equals_an_uninterrupted_run(tiny_splits, tmp_path):
    """Stop after one epoch, resume a fresh state from the checkpoint, finish: same weights."""
    straight, straight_opt, straight_history = _run(tiny_splits, 3)
    _run(tiny_splits, 1, checkpoint=tmp_path / "run")  # interrupted after epoch 1
    resumed, resumed_opt, resumed_history = _run(
        tiny_splits, 3, checkpoint=tmp_path / "run", resume=True
    )
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert straight_history.val_loss == resumed_history.val_loss
    assert straight_history.train_loss == resumed_history.train_loss
    assert straight_opt.param_groups[0]["lr"] == resumed_opt.param_groups[0]["lr"]


def test_nan_loss_stops_training(tiny_splits):
    model = dl.MLP()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e30)
    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        dl.fit(model, tiny_splits, optimizer, num_epochs=2, batch_size=32)


def test_recipe_training_is_deterministic(tiny_splits):
    recipe = dl.Recipe("cnn", {"c1": 4, "c2": 8, "hidden": 16}, num_epochs=1, batch_size=50)
    a = dl.train_recipe(recipe, tiny_splits)
    b = dl.train_recipe(recipe, tiny_splits)
    for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()):
        assert torch.equal(x, y)
    assert a.history.val_acc == b.history.val_acc and a.train_seconds > 0
