"""Data-parallel training with torch.distributed: the process group, DDP, checkpoints, the CLI.

Launch it with torchrun, which starts one process per rank and sets the rendezvous variables:

    torchrun --nproc-per-node 2 -m dlbook.distributed --recipe cnn --epochs 2 \\
        --checkpoint-dir artifacts/ddp/cnn

Every rank trains on its share of each global batch (`dlbook.sharding`); DDP averages the
gradients, so the global batch size and the learning rate do not change with the world size.
Rank 0 alone writes checkpoints and logs; every rank resumes from the newest valid checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from .checkpoint import (
    CheckpointError,
    atomic_write,
    checkpoint_paths,
    load_checkpoint,
    load_training_state,
    save_checkpoint,
)
from .data import DataError, MNISTSplits, ensure_mnist, load_mnist
from .history import History
from .models import build_model
from .runtime import resolve_device, seed_everything
from .sharding import global_batches, rank_batches
from .training import evaluate_tensors
from .zoo import RECIPES, Recipe, make_optimizer

TORCHRUN_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
LAUNCH_HINT = "launch with torchrun, e.g. `torchrun --nproc-per-node 2 -m dlbook.distributed ...`"
KEEP_CHECKPOINTS = 2  # the newest and one before it, in case the newest is damaged


class LaunchError(RuntimeError):
    """A distributed run cannot start or resume; the message says what to do."""


@dataclass(frozen=True)
class Context:
    """This process's place in the process group."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    backend: str  # 'gloo' on CPU, 'nccl' on CUDA

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, logs and metrics."""
        return self.rank == 0


def torchrun_env(env: dict[str, str] | None = None) -> tuple[int, int, int]:
    """(rank, local rank, world size) from torchrun's variables, or a LaunchError."""
    env = dict(os.environ) if env is None else env
    missing = [name for name in TORCHRUN_ENV if not env.get(name)]
    if missing:
        raise LaunchError(f"no torchrun rendezvous ({', '.join(missing)} not set): {LAUNCH_HINT}")
    try:
        rank, local_rank, world = (int(env[k]) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"))
    except ValueError:
        raise LaunchError(
            f"RANK, LOCAL_RANK and WORLD_SIZE must be integers: {LAUNCH_HINT}"
        ) from None
    if world < 1 or not 0 <= rank < world:
        raise LaunchError(f"bad world size {world} for rank {rank}: {LAUNCH_HINT}")
    return rank, local_rank, world


def _device_for(name: str, local_rank: int) -> tuple[torch.device, str]:
    """The device and backend of this rank: gloo on CPU, NCCL on one GPU per process."""
    try:
        device = resolve_device(name)
    except ValueError as err:
        raise LaunchError(str(err)) from None
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise LaunchError(
                f"local rank {local_rank} has no GPU ({torch.cuda.device_count()} on this node): "
                "use --nproc-per-node at most the number of GPUs"
            )
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank), "nccl"
    if device.type != "cpu":
        raise LaunchError(f"no distributed backend for {device.type}: use --device cpu")
    return device, "gloo"


def _attempt_store(rank: int, world: int, timeout_s: float) -> dist.Store:
    """The rendezvous store, with keys private to this restart of the job.

    torchrun keeps its store across restarts; without a prefix, a restarted rank can read the
    address a killed rank published and wait on a dead port.
    """
    agent_hosts = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        world,
        is_master=rank == 0 and not agent_hosts,
        timeout=timedelta(seconds=timeout_s),
    )
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return dist.PrefixStore(f"/dlbook/attempt-{attempt}", store)


@contextmanager
def process_group(device: str = "auto", timeout_s: float = 120) -> Iterator[Context]:
    """Join the process group described by torchrun's environment; leave it on exit."""
    rank, local_rank, world = torchrun_env()
    torch_device, backend = _device_for(device, local_rank)
    address = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
    try:
        dist.init_process_group(
            backend,
            store=_attempt_store(rank, world, timeout_s),
            rank=rank,
            world_size=world,
            timeout=timedelta(seconds=timeout_s),
        )
    except (RuntimeError, ValueError) as err:  # DistStoreError and friends subclass RuntimeError
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise LaunchError(
            f"rendezvous at {address} failed within {timeout_s:g} s ({first}): check that "
            "every node runs the same torchrun command with the same --rdzv-endpoint"
        ) from None
    try:
        yield Context(rank, local_rank, world, torch_device, backend)
    finally:
        dist.destroy_process_group()


@dataclass(frozen=True)
class RunConfig:
    """What one data-parallel training run does."""

    recipe: Recipe
    train_size: int = 0  # the first N training images; 0: all 55,000
    checkpoint_dir: Path | None = None
    checkpoint_every: int = 0  # steps between checkpoints; 0: at the end of each epoch only
    max_steps: int = 0  # stop after this many steps in all (0: run every epoch)
    reshuffle: bool = True  # False: the mistake of reusing one order in every epoch
    scale_lr_by_world: bool = False  # True: the mistake of lr × world size at the same batch


def checkpoint_stem(directory: Path, step: int) -> Path:
    """Where the checkpoint after `step` global steps lives."""
    return directory / f"step-{step:07d}"


def _steps_in(directory: Path) -> list[int]:
    """Steps of the checkpoints in `directory` that have both files, newest first."""
    steps = []
    for meta in directory.glob("step-*.json"):
        tensors, _ = checkpoint_paths(meta)
        if tensors.is_file() and meta.stem[5:].isdigit():
            steps.append(int(meta.stem[5:]))
    return sorted(steps, reverse=True)


def latest_checkpoint(directory: Path, log=print) -> Path | None:
    """The newest checkpoint in `directory` that verifies; damaged ones are skipped, said aloud."""
    if not directory.is_dir():
        return None
    for step in _steps_in(directory):
        stem = checkpoint_stem(directory, step)
        try:
            load_checkpoint(stem)
        except CheckpointError as err:
            log(f"skipping damaged checkpoint: {err}")
            continue
        return stem
    return None


def _prune(directory: Path, keep: int = KEEP_CHECKPOINTS) -> None:
    """Delete all but the newest `keep` checkpoints (metadata first: never a dangling pair)."""
    for step in _steps_in(directory)[keep:]:
        for file in reversed(checkpoint_paths(checkpoint_stem(directory, step))):
            file.unlink(missing_ok=True)


def _recipe_record(recipe: Recipe) -> dict:
    """The recipe as stored in a checkpoint's JSON."""
    return json.loads(json.dumps(dataclasses.asdict(recipe)))


def _check_same_run(meta: dict, run: RunConfig, stem: Path) -> None:
    """Refuse to resume a checkpoint written by another recipe or data size."""
    theirs = {"recipe": meta.get("recipe"), "train_size": meta.get("train_size")}
    ours = {"recipe": _recipe_record(run.recipe), "train_size": run.train_size}
    if theirs != ours:
        raise LaunchError(
            f"checkpoint {stem} was written by another run ({theirs}); this run is {ours}: "
            "use another --checkpoint-dir, or the options that wrote it"
        )


def allreduce_ms(num_elements: int, device: torch.device, repeats: int = 20) -> float:
    """Median time of one all-reduce (sum) of `num_elements` float32 values across the group."""
    buffer = torch.ones(num_elements, device=device)
    times = []
    for _ in range(repeats + 2):
        dist.barrier()
        tic = time.perf_counter()
        dist.all_reduce(buffer)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - tic)
    return statistics.median(times[2:]) * 1e3  # the first two warm up the connection


def _write_json(path: Path, record: dict) -> None:
    """Write JSON atomically (a temporary file renamed over the target)."""
    atomic_write(path, lambda part: part.write_text(json.dumps(record, indent=1)))


def _reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum a few numbers over all ranks."""
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


@dataclass
class _State:
    """What a checkpoint holds besides the tensors: where training is and what it recorded."""

    step: int = 0
    history: History = dataclasses.field(default_factory=History)
    partial: list[float] = dataclasses.field(default_factory=lambda: [0.0, 0.0])  # loss, count


def _resume(ctx: Context, run: RunConfig, model, optimizer, scheduler, say) -> _State:
    """Load the newest valid checkpoint that rank 0 found into every rank; a fresh state if none."""
    assert run.checkpoint_dir is not None
    if ctx.is_main:
        try:
            run.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise LaunchError(
                f"cannot use --checkpoint-dir {run.checkpoint_dir} ({err.strerror}): "
                "give a writable folder"
            ) from None
    found = [latest_checkpoint(run.checkpoint_dir, log=say) if ctx.is_main else None]
    dist.broadcast_object_list(found, src=0)  # every rank resumes from rank 0's choice
    if found[0] is None:
        return _State()
    stem = Path(found[0])
    _, record = load_checkpoint(stem)
    meta = record["meta"]
    _check_same_run(meta, run, stem)
    history, _ = load_training_state(stem, model, optimizer, scheduler)
    say(f"resumed from {stem.name} (step {meta['step']})")
    partial = meta["partial"] if ctx.is_main else [0.0, 0.0]  # the sum over ranks is the total
    return _State(meta["step"], History.from_dict(history), partial)


def _save(ctx: Context, run: RunConfig, state: _State, model, optimizer, scheduler) -> None:
    """All ranks sum the epoch's loss so far; rank 0 writes the checkpoint and prunes old ones."""
    total = _reduce_sum(state.partial, ctx.device)
    if not ctx.is_main or run.checkpoint_dir is None:
        return
    meta = {
        "recipe": _recipe_record(run.recipe),
        "train_size": run.train_size,
        "step": state.step,
        "partial": total,
        "world_size": ctx.world_size,
    }
    save_checkpoint(
        checkpoint_stem(run.checkpoint_dir, state.step),
        model,
        meta=meta,
        optimizer=optimizer,
        scheduler=scheduler,
        history=state.history.to_dict(),
    )
    _prune(run.checkpoint_dir)


def _step(
    ddp: DistributedDataParallel,
    optimizer,
    scheduler,
    X: Tensor,
    y: Tensor,
    global_size: int,
    world_size: int,
) -> float:
    """One optimizer step on this rank's share; returns the share's summed loss."""
    optimizer.zero_grad(set_to_none=True)
    loss_sum = F.cross_entropy(ddp(X), y, reduction="sum")
    (loss_sum * (world_size / global_size)).backward()  # DDP averages: the global batch mean
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return loss_sum.item()


@torch.inference_mode()
def evaluate_sharded(ctx: Context, model: nn.Module, X: Tensor, y: Tensor) -> tuple[float, float]:
    """Mean loss and accuracy over (X, y), each rank scoring every world_size-th example.

    Rank 0's buffers (BatchNorm statistics) are sent to all first, so every rank scores the
    same model, and the result equals one process scoring everything.
    """
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)
    mine = slice(ctx.rank, None, ctx.world_size)
    loss, acc = evaluate_tensors(model, X[mine], y[mine], batch_size=128)  # cache-sized
    count = len(y[mine])
    loss_sum, correct, total = _reduce_sum([loss * count, acc * count, count], ctx.device)
    return loss_sum / total, correct / total


def _end_epoch(
    ctx: Context, state: _State, model: nn.Module, data: MNISTSplits, seconds: float, say
) -> None:
    """Sum the epoch's loss over ranks, validate together; rank 0 records and logs."""
    loss_sum, count = _reduce_sum(state.partial, ctx.device)
    state.partial = [0.0, 0.0]
    val_loss, val_acc = evaluate_sharded(ctx, model, data.X_val, data.y_val)
    if ctx.is_main:
        state.history.append(loss_sum / count, val_loss, val_acc, seconds)
        say(
            f"epoch {state.history.num_epochs}: step {state.step}, "
            f"train loss {loss_sum / count:.4f}, val acc {val_acc:.4f}"
        )


def train(ctx: Context, run: RunConfig, data: MNISTSplits, log=print) -> dict[str, Any]:
    """Train run.recipe with DDP on this rank's shares; rank 0 returns the metrics, others {}."""
    recipe, say = run.recipe, (log if ctx.is_main else lambda *a, **k: None)
    data = data.first_train(run.train_size) if run.train_size else data
    n, batch = len(data.X_train), recipe.batch_size
    per_epoch = len(global_batches(n, batch, recipe.seed, 0, min_size=ctx.world_size))
    total = min(recipe.num_epochs * per_epoch, run.max_steps or recipe.num_epochs * per_epoch)
    seed_everything(recipe.seed)
    model = build_model(recipe.model, **recipe.model_kwargs).to(ctx.device)
    lr_recipe = recipe.replace(lr=recipe.lr * ctx.world_size) if run.scale_lr_by_world else recipe
    optimizer, scheduler = make_optimizer(lr_recipe, model, per_epoch)
    state = _State()
    if run.checkpoint_dir is not None:
        state = _resume(ctx, run, model, optimizer, scheduler, say)
    resumed_from = state.step
    ddp = DistributedDataParallel(
        model, device_ids=[ctx.local_rank] if ctx.backend == "nccl" else None
    )
    pids: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(pids, os.getpid())
    attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    progress = None
    if run.checkpoint_dir is not None and ctx.is_main:
        progress = run.checkpoint_dir / f"progress-{attempt}.json"  # for the chapter to watch
    seconds, images = 0.0, 0
    while state.step < total:
        epoch, first = divmod(state.step, per_epoch)
        shares = rank_batches(
            n, batch, recipe.seed, epoch, ctx.rank, ctx.world_size, reshuffle=run.reshuffle
        )
        ddp.train()
        tic = time.perf_counter()
        for index, size in shares[first:]:
            torch.manual_seed(recipe.seed + 1_000_003 * ctx.rank + state.step)  # dropout masks
            index = index.to(data.X_train.device)
            X, y = data.X_train[index], data.y_train[index]  # (b, 1, 28, 28), (b,)
            state.partial[0] += _step(ddp, optimizer, scheduler, X, y, size, ctx.world_size)
            state.partial[1] += len(y)
            state.step, images = state.step + 1, images + size
            if progress is not None:
                _write_json(progress, {"attempt": attempt, "step": state.step, "pids": pids})
            if state.step == total or state.step % per_epoch == 0:
                break
            if run.checkpoint_every and state.step % run.checkpoint_every == 0:
                _save(ctx, run, state, model, optimizer, scheduler)
        seconds += time.perf_counter() - tic
        if state.step % per_epoch == 0:
            _end_epoch(ctx, state, model, data, time.perf_counter() - tic, say)
        _save(ctx, run, state, model, optimizer, scheduler)  # at each epoch's end, and the last
    num_params = sum(p.numel() for p in model.parameters())
    reduce_ms = allreduce_ms(num_params, ctx.device)
    test_loss, test_acc = evaluate_sharded(ctx, model, data.X_test, data.y_test)
    if not ctx.is_main:
        return {}
    metrics = {
        "recipe": _recipe_record(recipe),
        "world_size": ctx.world_size,
        "backend": ctx.backend,
        "threads": torch.get_num_threads(),
        "train_size": n,
        "steps": state.step,
        "resumed_from_step": resumed_from,
        "restart_count": attempt,
        "train_seconds": seconds,
        "images_per_second": images / seconds if images else None,
        "step_ms": 1e3 * seconds / max(state.step - resumed_from, 1),
        "allreduce_ms": reduce_ms,
        "num_params": num_params,
        "test_loss": test_loss,
        "test_acc": test_acc,
        "history": state.history.to_dict(),
        "pids": pids,
    }
    speed = f"{images / seconds:.0f} images/s" if images else "nothing left to train"
    say(
        f"done: {state.step} steps, test acc {test_acc:.4f}, {speed}, "
        f"all-reduce of {num_params:,} floats {reduce_ms:.2f} ms"
    )
    return metrics


def torchrun_command(
    args: Sequence[str], nproc: int = 2, max_restarts: int = 0, module: str = "dlbook.distributed"
) -> list[str]:
    """The command line that runs `module` under torchrun on this machine (a free local port)."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        f"--max-restarts={max_restarts}",
        "-m",
        module,
        *args,
    ]


def wait_for_step(
    progress: Path, step: int, process: subprocess.Popen, timeout: float = 300
) -> dict[str, Any]:
    """Rank 0's progress record once it has passed `step`; an error if the run ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the run ended (status {process.returncode}) before step {step}")
        try:
            record = json.loads(progress.read_text())
        except (FileNotFoundError, json.JSONDecodeError):  # not written yet
            record = {"step": -1}
        if record["step"] >= step:
            return record
        time.sleep(0.02)
    raise TimeoutError(f"rank 0 did not reach step {step} within {timeout:g} s")


def run_killing_a_rank(
    args: Sequence[str],
    checkpoint_dir: Path,
    kill_at: int,
    nproc: int = 2,
    *,
    rank: int = -1,
    timeout: float | None = None,
) -> tuple[str, int]:
    """Run under `torchrun --max-restarts 1`, SIGKILL `rank` once rank 0 has passed step
    `kill_at`, and let the job restart; (its output, the last step before the kill)."""
    command = torchrun_command(
        [*args, "--checkpoint-dir", str(checkpoint_dir)], nproc, max_restarts=1
    )
    with subprocess.Popen(  # its own session: torchrun's clean-up signals stay in there
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    ) as job:
        progress = checkpoint_dir / "progress-0.json"  # the first attempt's
        os.kill(wait_for_step(progress, kill_at, job)["pids"][rank], signal.SIGKILL)
        output = job.communicate(timeout=timeout)[0]
    if job.returncode != 0:
        raise RuntimeError(f"torchrun exited with status {job.returncode}:\n{output[-3000:]}")
    return output, json.loads(progress.read_text())["step"]


def run_torchrun(
    args: Sequence[str],
    nproc: int = 2,
    *,
    module: str = "dlbook.distributed",
    timeout: float | None = None,
) -> str:
    """Run `module` under torchrun in its own session; its output, or an error with its tail."""
    done = subprocess.run(
        torchrun_command(args, nproc, module=module),
        capture_output=True,
        text=True,
        timeout=timeout,
        start_new_session=True,  # torchrun's clean-up signals stay in there
    )
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-3000:]
        raise RuntimeError(f"torchrun exited with status {done.returncode}:\n{tail}")
    return done.stdout


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line of `torchrun ... -m dlbook.distributed`."""
    parser = argparse.ArgumentParser(
        prog="torchrun --nproc-per-node N -m dlbook.distributed",
        description="Train one of the book's recipes with DistributedDataParallel. The global "
        "batch size and learning rate stay the recipe's, whatever the number of processes.",
    )
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="cnn")
    parser.add_argument("--epochs", type=int, help="default: the recipe's")
    parser.add_argument("--batch-size", type=int, help="the global batch; default: the recipe's")
    parser.add_argument("--lr", type=float, help="default: the recipe's")
    parser.add_argument("--seed", type=int, help="default: the recipe's")
    parser.add_argument("--train-size", type=int, default=0, help="first N images (0: all)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="threads per process (0: cores / processes on this node)",
    )
    parser.add_argument("--checkpoint-dir", type=Path, help="resume from and save here")
    parser.add_argument(
        "--checkpoint-every",
        type=int,
        default=0,
        help="steps between checkpoints (0: at the end of each epoch)",
    )
    parser.add_argument("--max-steps", type=int, default=0, help="stop after N steps (0: all)")
    parser.add_argument("--metrics-out", type=Path, help="rank 0 writes its metrics here (JSON)")
    parser.add_argument("--timeout", type=float, default=120, help="rendezvous timeout, s")
    mistakes = parser.add_argument_group("mistakes, for the scale-out chapter to measure")
    mistakes.add_argument(
        "--no-reshuffle", action="store_true", help="reuse epoch 0's order in every epoch"
    )
    mistakes.add_argument(
        "--scale-lr-by-world",
        action="store_true",
        help="multiply the learning rate by the world size, batch unchanged",
    )
    args = parser.parse_args(argv)
    for name in (
        "epochs",
        "batch_size",
        "lr",
        "threads",
        "train_size",
        "checkpoint_every",
        "max_steps",
        "timeout",
    ):
        value = getattr(args, name)
        low = 0 if name in ("threads", "train_size", "checkpoint_every", "max_steps") else 1e-12
        if value is not None and value < low:
            parser.error(f"--{name.replace('_', '-')} must be {'>= 0' if low == 0 else '> 0'}")
    return args


def run_config(args: argparse.Namespace) -> RunConfig:
    """The RunConfig the command line asks for."""
    changes = {
        "num_epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
    }
    recipe = RECIPES[args.recipe].replace(**{k: v for k, v in changes.items() if v is not None})
    return RunConfig(
        recipe,
        args.train_size,
        args.checkpoint_dir,
        args.checkpoint_every,
        args.max_steps,
        not args.no_reshuffle,
        args.scale_lr_by_world,
    )


def _load_data(ctx: Context) -> MNISTSplits:
    """MNIST on every rank; the first rank of each node fetches and extracts it, alone."""
    problem = None
    if ctx.local_rank == 0:
        try:
            ensure_mnist()
        except DataError as err:
            problem = str(err)
    problems: list[str | None] = [None] * ctx.world_size
    dist.all_gather_object(problems, problem)  # also a barrier: the others wait for the data
    for found in problems:
        if found is not None:
            raise DataError(found)
    return load_mnist(ctx.device)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for torchrun; returns the exit status (2: a user's mistake, said in one line)."""
    args = parse_args(argv)
    try:
        run = run_config(args)
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
        torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 1) // local))
        with process_group(args.device, args.timeout) as ctx:
            data = _load_data(ctx)
            metrics = train(ctx, run, data, log=functools.partial(print, flush=True))
        if metrics and args.metrics_out is not None:
            args.metrics_out.parent.mkdir(parents=True, exist_ok=True)
            _write_json(args.metrics_out, metrics)
    except (LaunchError, CheckpointError, DataError, ValueError) as err:
        print(f"dlbook.distributed: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
