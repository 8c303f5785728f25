"""Data-parallel training on two real gloo processes under torchrun, and its error messages."""

import itertools
import json
import os
import subprocess

import pytest
import torch

import dlbook as dl
from dlbook.checkpoint import model_tensors
from dlbook.distributed import (
    LaunchError,
    RunConfig,
    latest_checkpoint,
    main,
    process_group,
    run_killing_a_rank,
    torchrun_command,
    torchrun_env,
    train,
)
from dlbook.fsdp import measure
from dlbook.serve import free_port
from dlbook.zoo import RECIPES


@pytest.fixture
def env(mnist_root):
    """The environment of a torchrun child: the test's data folder, one thread per process."""
    return {**os.environ, "DLBOOK_DATA_DIR": str(mnist_root), "OMP_NUM_THREADS": "1"}


def run(args, env, nproc=2, **kwargs):
    """Run `args` under torchrun; fail the test with the children's output if it fails."""
    done = subprocess.run(
        torchrun_command(args, nproc, **kwargs),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_two_ranks_take_the_steps_of_one_process_with_the_whole_batch(tmp_path, env, mnist):
    steps = 12
    run(["--recipe", "mlp", "--max-steps", str(steps), "--checkpoint-dir", str(tmp_path)], env)
    ddp = model_tensors(latest_checkpoint(tmp_path))
    recipe = RECIPES["mlp"]  # the reference: fit's loop, one process, the global batch
    dl.seed_everything(recipe.seed)
    model = dl.build_model(recipe.model, **recipe.model_kwargs)
    per_epoch = -(-len(mnist.X_train) // recipe.batch_size)
    optimizer, scheduler = dl.zoo.make_optimizer(recipe, model, per_epoch)
    batches = dl.iterate_batches(
        mnist.X_train, mnist.y_train, recipe.batch_size, shuffle=True, seed=recipe.seed
    )
    dl.train_one_epoch(model, itertools.islice(batches, steps), optimizer, scheduler=scheduler)
    diffs = [(ddp[k] - v).abs().max().item() for k, v in model.state_dict().items()]
    assert max(diffs) <= 1e-6  # float32 round-off of two sums instead of one


def test_a_killed_worker_is_restarted_and_resumes_to_the_same_model(tmp_path, env):
    args = ["--recipe", "cnn", "--epochs", "2", "--train-size", "3000", "--checkpoint-every", "8"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    run([*args, "--checkpoint-dir", str(straight), "--metrics-out", str(straight / "m.json")], env)
    out = killed / "m.json"
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        _, killed_at = run_killing_a_rank([*args, "--metrics-out", str(out)], killed, 20)
    assert killed_at >= 20  # rank 1 died in the middle of epoch 1
    done, reference = json.loads(out.read_text()), json.loads((straight / "m.json").read_text())
    assert done["restart_count"] == 1 and done["resumed_from_step"] in (16, 24)
    assert done["steps"] == reference["steps"] == 2 * 24
    assert done["test_acc"] == pytest.approx(reference["test_acc"], abs=1e-9)
    said = []
    a, b = (
        model_tensors(latest_checkpoint(killed, log=said.append)),
        model_tensors(latest_checkpoint(straight)),
    )
    assert not said  # no checkpoint was left damaged by the kill
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6


def test_fsdp_halves_what_each_rank_holds(tmp_path, env, monkeypatch):
    out = tmp_path / "fsdp.json"
    run(["--model", "cnn", "--metrics-out", str(out)], env, 2, module="dlbook.fsdp")
    _single(monkeypatch)  # the unsharded reference: a world of one, in this process
    with process_group("cpu"):
        one = measure("cnn")
    for rank in json.loads(out.read_text())["per_rank"]:
        for kind in ("parameters", "gradients", "optimizer"):
            assert rank[kind] == pytest.approx(one[kind] / 2, rel=0.01), kind


def test_without_torchrun_the_command_says_how_to_launch(monkeypatch, capsys):
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert main(["--max-steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "no torchrun rendezvous" in err and "torchrun --nproc-per-node" in err


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2"}, "MASTER_ADDR, MASTER_PORT not set"),
        ({"RANK": "a", "LOCAL_RANK": "0", "WORLD_SIZE": "2"}, "must be integers"),
        ({"RANK": "2", "LOCAL_RANK": "0", "WORLD_SIZE": "2"}, "bad world size 2 for rank 2"),
        ({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "0"}, "bad world size 0"),
    ],
)
def test_a_bad_environment_is_named(env, message):
    full = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1", **env}
    if "MASTER" in message:
        full = env
    with pytest.raises(LaunchError, match=message):
        torchrun_env(full)


def _single(monkeypatch, port=None):
    """Pretend to be rank 0 of a world of 1, as torchrun would set it."""
    for name, value in {
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port or free_port()),
    }.items():
        monkeypatch.setenv(name, value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a CPU-only machine")
def test_a_cuda_request_without_cuda_is_refused(monkeypatch, capsys):
    _single(monkeypatch)
    assert main(["--device", "cuda", "--max-steps", "1"]) == 2
    assert "device 'cuda' was requested but is not available" in capsys.readouterr().err


def test_a_missing_rendezvous_times_out_with_a_message(monkeypatch):
    _single(monkeypatch)
    monkeypatch.setenv("WORLD_SIZE", "2")  # rank 1 never comes
    expected = pytest.raises(LaunchError, match="rendezvous at 127.0.0.1:.* failed within 2 s")
    with expected, process_group("cpu", timeout_s=2):
        pass


def test_a_checkpoint_from_another_recipe_is_refused(monkeypatch, tmp_path, tiny_splits):
    _single(monkeypatch)
    small = RECIPES["mlp"].replace(num_epochs=1, batch_size=100, model_kwargs={"hidden": 8})
    with process_group("cpu") as ctx:
        train(ctx, RunConfig(small, checkpoint_dir=tmp_path), tiny_splits, log=lambda *a: None)
        other = RunConfig(small.replace(lr=0.1), checkpoint_dir=tmp_path)
        with pytest.raises(LaunchError, match="written by another run.*another --checkpoint-dir"):
            train(ctx, other, tiny_splits, log=lambda *a: None)


def test_a_damaged_newest_checkpoint_is_skipped(monkeypatch, tmp_path, tiny_splits):
    _single(monkeypatch)
    recipe = RECIPES["mlp"].replace(num_epochs=2, batch_size=100, model_kwargs={"hidden": 8})
    with process_group("cpu") as ctx:
        train(ctx, RunConfig(recipe, checkpoint_dir=tmp_path), tiny_splits, log=lambda *a: None)
    newest = tmp_path / "step-0000008.safetensors"
    newest.write_bytes(newest.read_bytes()[:100])  # as if the machine died while writing it
    said = []
    assert latest_checkpoint(tmp_path, log=said.append) == tmp_path / "step-0000004"
    assert "skipping damaged checkpoint" in said[0]


def test_bad_numbers_on_the_command_line_are_refused(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--epochs", "0"])
    assert exit_.value.code == 2 and "--epochs must be > 0" in capsys.readouterr().err
