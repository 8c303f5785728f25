"""Profiling helpers of the deployment chapter: MACs per layer kind and the latency table."""

import pytest
import torch
from torch import nn

import dlbook as dl
from dlbook import profiling


def test_macs_by_kind_counts_linear_and_conv_layers():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))
    macs = profiling.macs_by_kind(model)
    assert macs == {"linear": 4 * 26 * 26 * 10, "conv": 4 * 1 * 3 * 3 * 26 * 26}
    assert not any(m._forward_hooks for m in model.modules())  # the hooks are removed


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_macs_are_half_the_flops_pytorch_counts(name):
    # Matrix products and convolutions are all the arithmetic flop_counter charges, 2 per MAC.
    model = dl.build_model(name)
    assert 2 * sum(profiling.macs_by_kind(model).values()) == profiling.flops_per_sample(model)


def test_latency_table_times_every_runner_on_every_batch(monkeypatch):
    calls = []

    def runner(tag):
        return lambda X: calls.append((tag, len(X)))

    monkeypatch.setattr(profiling, "median_latency", lambda fn, warmup, repeats: (fn(), 0.004)[1])
    runners = {("mlp", "eager"): runner("a"), ("mlp", "onnx"): runner("b")}
    batches = {1: torch.zeros(1, 1, 28, 28), 8: torch.zeros(8, 1, 28, 28)}
    rows = profiling.latency_table(runners, batches, warmup=0, repeats=1)
    assert calls == [("a", 1), ("a", 8), ("b", 1), ("b", 8)]
    assert rows[1] == {
        "model": "mlp",
        "runtime": "onnx",
        "batch 1: ms": 4.0,
        "batch 1: images/s": 250.0,
        "batch 8: ms": 4.0,
        "batch 8: images/s": 2000.0,
    }


def test_latency_table_measures_wall_time():
    rows = profiling.latency_table(
        {("m", "r"): lambda X: X.sum()}, {4: torch.ones(4, 3)}, warmup=1, repeats=3
    )
    assert rows[0]["batch 4: ms"] > 0
    assert rows[0]["batch 4: images/s"] == pytest.approx(4 / (rows[0]["batch 4: ms"] / 1e3))
