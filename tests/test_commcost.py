import numpy as np
import pytest

from dlbook import commcost
from dlbook.commcost import (
    ETHERNET_100G,
    NVLINK_H100,
    Link,
    best_world_size,
    data_parallel_speedup,
    efficient_world_size,
    ring_allreduce_seconds,
)


def simulated_ring_allreduce(values: np.ndarray) -> tuple[np.ndarray, int, int]:
    """A ring all-reduce done step by step: (each rank's result, steps, elements one rank sent)."""
    n = len(values)
    chunks = [np.array_split(v.astype(float), n) for v in values]  # chunks[rank][chunk]
    steps, sent = 0, 0
    for phase in ("reduce-scatter", "all-gather"):
        for s in range(n - 1):
            moves = []
            for rank in range(n):
                c = (rank - s + (1 if phase == "all-gather" else 0)) % n
                moves.append(((rank + 1) % n, c, chunks[rank][c].copy()))
            for dst, c, data in moves:
                chunks[dst][c] = chunks[dst][c] + data if phase == "reduce-scatter" else data
            steps, sent = steps + 1, sent + len(moves[0][2])
    return np.stack([np.concatenate(c) for c in chunks]), steps, sent


@pytest.mark.parametrize("n", [2, 3, 4, 8])
def test_the_cost_model_counts_what_a_ring_all_reduce_does(n):
    rng = np.random.default_rng(n)
    values = rng.normal(size=(n, 64 * n))
    result, steps, sent = simulated_ring_allreduce(values)
    np.testing.assert_allclose(result, np.broadcast_to(values.sum(0), result.shape))
    assert steps == 2 * (n - 1) and sent == 2 * (n - 1) * 64  # elements, one chunk a step
    link = Link("test", bandwidth=1e9, latency=1e-6, source="")
    num_bytes = values[0].nbytes
    expected = sent * values.itemsize / link.bandwidth + steps * link.latency
    assert ring_allreduce_seconds(num_bytes, n, link) == pytest.approx(expected)


def test_one_device_needs_no_communication_and_bad_sizes_are_refused():
    assert ring_allreduce_seconds(1e9, 1, NVLINK_H100) == 0
    with pytest.raises(ValueError, match="world_size=0"):
        ring_allreduce_seconds(1e9, 0, NVLINK_H100)


def test_the_speedup_peaks_sooner_on_a_slower_link():
    sizes = np.arange(1, 257)
    fast = data_parallel_speedup(1.0, 500e6, sizes, NVLINK_H100)
    slow = data_parallel_speedup(1.0, 500e6, sizes, ETHERNET_100G)
    assert fast[0] == slow[0] == 1
    assert (fast >= slow).all()
    assert best_world_size(1.0, 500e6, ETHERNET_100G) < best_world_size(1.0, 500e6, NVLINK_H100)


def test_the_efficient_world_size_is_where_half_the_ideal_is_lost():
    t1, size = 1.0, 500e6
    n = efficient_world_size(t1, size, ETHERNET_100G)
    speedups = data_parallel_speedup(t1, size, np.array([n, n + 1]), ETHERNET_100G)
    assert speedups[0] / n >= 0.5 > speedups[1] / (n + 1)
    assert n <= best_world_size(t1, size, ETHERNET_100G)


def test_scaling_limits_agree_with_the_speedup_curve():
    link = commcost.ETHERNET_100G
    row = commcost.scaling_limits(0.05, 500e6, link)
    sizes = np.arange(1, 4097)
    speedup = commcost.data_parallel_speedup(0.05, 500e6, sizes, link)
    assert row["GPUs at peak speedup"] == sizes[np.argmax(speedup)]
    half = row["GPUs at 50% efficiency"]
    assert speedup[half - 1] >= 0.5 * half and speedup[half] < 0.5 * (half + 1)
    assert row["compute per step (ms)"] == 50.0
    assert row["all-reduce at 8 GPUs (ms)"] == round(
        commcost.ring_allreduce_seconds(500e6, 8, link) * 1e3, 3
    )
