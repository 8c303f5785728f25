"""What data parallelism costs beyond one machine: the ring all-reduce model and its speedup."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Link:
    """An interconnect: bandwidth per direction and an assumed per-message latency."""

    name: str
    bandwidth: float  # bytes/s per direction, per GPU
    latency: float  # seconds per ring step (an assumption, not a datasheet number)
    source: str


# Bandwidths from the standard or the datasheet; latencies are order-of-magnitude assumptions.
NVLINK_H100 = Link("NVLink 4 (H100 SXM)", 450e9, 2e-6, "NVIDIA H100 datasheet: 900 GB/s, both ways")
ETHERNET_100G = Link("100 Gb/s Ethernet", 100e9 / 8, 10e-6, "IEEE 802.3ba: 100 Gb/s per direction")
LINKS = (NVLINK_H100, ETHERNET_100G)


def ring_allreduce_seconds(num_bytes: float, world_size: int, link: Link) -> float:
    """α-β cost of a ring all-reduce: 2(N−1) steps, each moving num_bytes/N over the link."""
    if world_size < 1:
        raise ValueError(f"world_size={world_size} must be >= 1")
    n = world_size
    return 2 * (n - 1) / n * num_bytes / link.bandwidth + 2 * (n - 1) * link.latency


def step_compute_seconds(flops_per_step: float, peak_flops: float, utilization: float) -> float:
    """Time one accelerator needs for a step's FLOPs at a sustained share of its peak."""
    return flops_per_step / (peak_flops * utilization)


def data_parallel_speedup(
    compute_seconds: float, num_bytes: float, world_sizes: np.ndarray, link: Link
) -> np.ndarray:
    """Speedup of a fixed global batch over N devices: t₁ / (t₁/N + all-reduce(N)), no overlap."""
    comm = np.array([ring_allreduce_seconds(num_bytes, int(n), link) for n in world_sizes])
    return compute_seconds / (compute_seconds / world_sizes + comm)


def best_world_size(compute_seconds: float, num_bytes: float, link: Link, max_n: int = 4096) -> int:
    """The world size at which the fixed-batch speedup peaks (adding devices after it hurts)."""
    sizes = np.arange(1, max_n + 1)
    return int(sizes[np.argmax(data_parallel_speedup(compute_seconds, num_bytes, sizes, link))])


def efficient_world_size(
    compute_seconds: float, num_bytes: float, link: Link, efficiency: float = 0.5, max_n: int = 4096
) -> int:
    """The largest world size whose speedup is still `efficiency` × N or more."""
    sizes = np.arange(1, max_n + 1)
    speedup = data_parallel_speedup(compute_seconds, num_bytes, sizes, link)
    return int(sizes[speedup / sizes >= efficiency].max())


def scaling_limits(
    compute_seconds: float, num_bytes: float, link: Link, at: int = 8
) -> dict[str, float | int]:
    """One model on one link: its step time, an all-reduce at `at` GPUs (ms), two world sizes."""
    return {
        "compute per step (ms)": round(compute_seconds * 1e3, 3),
        f"all-reduce at {at} GPUs (ms)": round(
            ring_allreduce_seconds(num_bytes, at, link) * 1e3, 3
        ),
        "GPUs at 50% efficiency": efficient_world_size(compute_seconds, num_bytes, link),
        "GPUs at peak speedup": best_world_size(compute_seconds, num_bytes, link),
    }
