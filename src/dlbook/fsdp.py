"""Fully sharded data parallelism (FSDP2's `fully_shard`): what each rank keeps in memory.

    torchrun --nproc-per-node 2 -m dlbook.fsdp --model cnn --metrics-out fsdp.json

Each rank builds the model, shards it, takes one AdamW step and reports the bytes of the
parameters, gradients and optimizer state it holds itself; rank 0 writes all ranks' numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributed.fsdp import fully_shard

from .distributed import LaunchError, process_group
from .models import MODELS, build_model


def _local(t: Tensor) -> Tensor:
    """The part of a (possibly sharded DTensor) tensor stored on this rank."""
    return t.to_local() if hasattr(t, "to_local") else t


def held_bytes(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, int]:
    """Bytes of parameters, gradients and optimizer state that this rank stores."""
    params = [_local(p) for p in model.parameters()]
    grads = [_local(p.grad) for p in model.parameters() if p.grad is not None]
    state = [
        _local(v) for slots in optimizer.state.values() for k, v in slots.items() if k != "step"
    ]
    return {
        name: sum(t.numel() * t.element_size() for t in tensors)
        for name, tensors in (("parameters", params), ("gradients", grads), ("optimizer", state))
    }


def shard(model: nn.Module) -> nn.Module:
    """Shard every direct child that has parameters, then the root (FSDP2's usual wrapping)."""
    for child in model.children():
        if any(True for _ in child.parameters()):
            fully_shard(child)
    fully_shard(model)
    return model


def measure(model_name: str, batch_size: int = 64, seed: int = 0) -> dict[str, int]:
    """Build, shard, take one AdamW step on random MNIST-shaped data; this rank's bytes."""
    torch.manual_seed(seed)
    model = shard(build_model(model_name))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    X = torch.randn(batch_size, 1, 28, 28)  # (B, 1, 28, 28); the values do not matter here
    y = torch.randint(0, 10, (batch_size,))
    F.cross_entropy(model(X), y).backward()
    optimizer.step()
    return held_bytes(model, optimizer)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for torchrun; exit status 2 with one line for a launch mistake."""
    parser = argparse.ArgumentParser(prog="torchrun --nproc-per-node N -m dlbook.fsdp")
    parser.add_argument("--model", choices=sorted(MODELS), default="cnn")
    parser.add_argument("--metrics-out", type=Path, help="rank 0 writes every rank's bytes here")
    args = parser.parse_args(argv)
    try:
        with process_group("cpu") as ctx:
            mine = measure(args.model)
            every: list[dict[str, int] | None] = [None] * ctx.world_size
            dist.all_gather_object(every, mine)
    except LaunchError as err:
        print(f"dlbook.fsdp: error: {err}", file=sys.stderr)
        return 2
    if ctx.is_main:
        record = {"model": args.model, "world_size": ctx.world_size, "per_rank": every}
        print(json.dumps(record))
        if args.metrics_out is not None:
            args.metrics_out.write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
