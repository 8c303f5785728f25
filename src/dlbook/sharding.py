"""Which examples each rank trains on: a global order per epoch, cut into batches and shares."""

from __future__ import annotations

import torch
from torch import Tensor


def epoch_order(n: int, seed: int, epoch: int) -> Tensor:
    """The permutation of range(n) used in `epoch`; the same as `fit`'s (seed + epoch)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))  # (n,)


def global_batches(
    n: int, batch_size: int, seed: int, epoch: int, min_size: int = 1, reshuffle: bool = True
) -> list[Tensor]:
    """Index batches of one epoch, a function of (seed, epoch) only.

    A last batch smaller than `min_size` (fewer examples than ranks) is merged into the one
    before it, so every example is still seen exactly once. `reshuffle=False` reproduces the
    classic mistake of reusing epoch 0's order in every epoch.
    """
    if batch_size < min_size:
        raise ValueError(
            f"batch size {batch_size} is smaller than {min_size} ranks: every rank needs at least "
            "one example per step; use a larger global batch or fewer processes"
        )
    batches = list(epoch_order(n, seed, epoch if reshuffle else 0).split(batch_size))
    if len(batches) > 1 and len(batches[-1]) < min_size:
        last = batches.pop()
        batches[-1] = torch.cat([batches[-1], last])
    return batches


def rank_share(batch: Tensor, rank: int, world_size: int) -> Tensor:
    """Rank's contiguous share of a global batch; sizes differ by at most one."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside a world of size {world_size}")
    return batch.tensor_split(world_size)[rank]


def rank_batches(
    n: int,
    batch_size: int,
    seed: int,
    epoch: int,
    rank: int,
    world_size: int,
    reshuffle: bool = True,
) -> list[tuple[Tensor, int]]:
    """(this rank's indices, the global batch's size) for every step of an epoch."""
    batches = global_batches(n, batch_size, seed, epoch, min_size=world_size, reshuffle=reshuffle)
    return [(rank_share(b, rank, world_size), len(b)) for b in batches]
