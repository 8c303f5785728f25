import pytest
import torch

import dlbook as dl
from dlbook.sharding import epoch_order, global_batches, rank_batches, rank_share


@pytest.mark.parametrize(
    ("n", "batch", "world"),
    [(1000, 100, 2), (1003, 100, 2), (1001, 100, 2), (1001, 100, 4), (999, 7, 3), (5, 5, 5)],
)
def test_every_example_is_seen_exactly_once_per_epoch_across_ranks(n, batch, world):
    for epoch in range(3):
        shares = [rank_batches(n, batch, 0, epoch, r, world) for r in range(world)]
        seen = torch.cat([index for rank in shares for index, _ in rank])
        assert torch.equal(seen.sort().values, torch.arange(n))
        steps = {len(rank) for rank in shares}
        assert len(steps) == 1  # every rank takes the same number of steps
        for step in zip(*shares):
            sizes = [len(index) for index, _ in step]
            assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1
            assert {size for _, size in step} == {sum(sizes)}  # all know the global size


def test_the_order_is_a_function_of_seed_and_epoch_only():
    assert torch.equal(epoch_order(500, 3, 2), epoch_order(500, 3, 2))
    assert not torch.equal(epoch_order(500, 3, 1), epoch_order(500, 3, 2))
    assert torch.equal(epoch_order(500, 0, 3), epoch_order(500, 1, 2))  # seed + epoch, like fit


def test_one_rank_sees_the_batches_of_fit(tiny_splits):
    X, y = tiny_splits.X_train, tiny_splits.y_train
    ours = [index for index, _ in rank_batches(len(X), 64, 5, 2, 0, 1)]
    theirs = list(dl.iterate_batches(X, y, 64, shuffle=True, seed=5 + 2))
    assert len(ours) == len(theirs)
    for index, (Xb, yb) in zip(ours, theirs):
        assert torch.equal(X[index], Xb) and torch.equal(y[index], yb)


def test_a_last_batch_smaller_than_the_world_is_merged_into_the_one_before():
    batches = global_batches(101, 10, 0, 0, min_size=2)
    assert [len(b) for b in batches] == [10] * 9 + [11]
    assert [len(b) for b in global_batches(101, 10, 0, 0)] == [10] * 10 + [1]


def test_without_reshuffling_every_epoch_repeats_the_first():
    a = global_batches(100, 10, 0, 0, reshuffle=False)
    b = global_batches(100, 10, 0, 4, reshuffle=False)
    assert all(torch.equal(x, z) for x, z in zip(a, b))


def test_impossible_shares_are_refused():
    with pytest.raises(ValueError, match="smaller than 4 ranks"):
        global_batches(100, 3, 0, 0, min_size=4)
    with pytest.raises(ValueError, match="rank 2 is outside a world of size 2"):
        rank_share(torch.arange(10), 2, 2)
