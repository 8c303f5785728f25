"""The load-test script, lightly: a small run against a real service counts and times every
request. No timed assertions: speed goals are met in benchmarks, not in unit tests."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest
import torch

import dlbook as dl
from dlbook import loadtest, serve
from dlbook.package import model_card, save_package


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """An untrained MLP package: the load test checks answers arrive, not their accuracy."""
    torch.manual_seed(0)
    model = dl.MLP(hidden=16)
    card = model_card(model, dl.Recipe("mlp", {"hidden": 16}), {"test_acc": None}, "0.0.1")
    return save_package(tmp_path_factory.mktemp("load") / "pkg", model, card)


@pytest.fixture(scope="module")
def pngs(mnist_root):
    return loadtest.mnist_pngs(20, root=mnist_root)


@pytest.fixture(scope="module")
def server(package):
    with serve.running_server(package) as url:
        yield url


def _check_numbers(result: loadtest.LoadResult, requests: int) -> None:
    summary = result.summary()
    assert summary["requests"] == requests and summary["errors"] == 0, result.first_error
    assert summary["throughput_rps"] > 0
    assert 0 < summary["p50_ms"] <= summary["p90_ms"] <= summary["p99_ms"]
    assert len(result.latencies_ms) == requests and np.all(result.latencies_ms > 0)


def test_mnist_pngs_are_real_digits(pngs, mnist):
    pixels = dl.preprocess.decode_image(pngs[3])  # (28, 28) in [0, 1]
    expected = dl.denormalize(mnist.X_test[3, 0]).numpy()
    np.testing.assert_allclose(pixels, expected, atol=1 / 255 + 1e-6)


@pytest.mark.parametrize("client", loadtest.CLIENTS)
def test_small_run_has_no_errors_and_all_numbers(server, pngs, client):
    _check_numbers(loadtest.run_load(server, pngs, requests=60, concurrency=4, client=client), 60)


def test_runs_inside_a_running_event_loop(server, pngs):
    """As from a Jupyter cell, where an event loop is already running."""

    async def cell() -> loadtest.LoadResult:
        return loadtest.run_load(server, pngs, requests=20, concurrency=4)

    _check_numbers(asyncio.run(cell()), 20)


def test_errors_are_counted_not_raised(pngs):
    closed = f"http://127.0.0.1:{serve.free_port()}"  # nothing listens there
    result = loadtest.run_load(closed, pngs, requests=5, concurrency=2, timeout=5)
    assert result.errors == 5 and "Connect" in (result.first_error or "")


def test_compare_starts_each_backend_and_merges_rounds(package, pngs):
    results = loadtest.compare(
        package, ("eager", "onnx"), (0.0, 5.0), requests=20, concurrency=4, rounds=2, pngs=pngs
    )
    names = ["eager, batch 0 ms", "eager, batch 5 ms", "onnx, batch 0 ms", "onnx, batch 5 ms"]
    assert list(results) == names
    for result in results.values():
        _check_numbers(result, 40)
    table = loadtest.format_table(results)
    assert all(name in table for name in names) and "p99 ms" in table


def test_main_against_a_url_prints_the_table(server, pngs, monkeypatch, capsys):
    monkeypatch.setattr(loadtest, "mnist_pngs", lambda n: pngs[:n])
    argv = ["--url", server, "--requests", "30", "--concurrency", "3", "--images", "5"]
    assert loadtest.main(argv) == 0
    out = capsys.readouterr().out
    assert "30 requests, 3 concurrent raw clients" in out and server in out


def test_help_and_bad_arguments(capsys):
    with pytest.raises(SystemExit) as info:
        loadtest.main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--url", "--model", "--requests", "--concurrency", "--backends", "--client"):
        assert flag in out
    with pytest.raises(SystemExit) as info:
        loadtest.main(["--url", "http://x", "--requests", "0"])
    assert info.value.code == 2
    with pytest.raises(ValueError, match="at least 1"):
        loadtest.run_load("http://x", [b"png"], requests=0)


def test_merge_pools_latencies():
    a = loadtest.LoadResult(2, 0, 1.0, np.array([1.0, 3.0]))
    b = loadtest.LoadResult(2, 1, 3.0, np.array([5.0, 7.0]), "HTTP 500")
    merged = loadtest.LoadResult.merge([a, b])
    assert (merged.requests, merged.errors, merged.first_error) == (4, 1, "HTTP 500")
    assert math.isclose(merged.throughput, 1.0) and merged.percentile(50) == 4.0


def test_named_settings_include_several_worker_processes(package, pngs):
    settings = [("eager", 0.0, 1), ("onnx", 2.0, 2)]
    results = loadtest.compare(
        package, settings=settings, requests=20, concurrency=4, rounds=1, pngs=pngs
    )
    assert list(results) == ["eager, batch 0 ms", "onnx, batch 2 ms, 2 workers"]
    for result in results.values():
        _check_numbers(result, 20)


def test_a_malformed_setting_is_refused(capsys):
    for bad in ("onnx:2", "gpu:2:1", "onnx:x:1", "onnx:2:0"):
        with pytest.raises(SystemExit) as info:
            loadtest.main(["--url", "http://x", "--setting", bad])
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert "e.g. onnx:2:2" in err or "at least 1 worker" in err
