"""Deployment formats against the eager model: ONNX Runtime, int8, torch.export."""

import copy

import pytest
import torch

import dlbook as dl
from dlbook import export


@pytest.fixture(scope="module")
def trained_cnn(mnist):
    recipe = dl.Recipe("cnn", {"c1": 8, "c2": 16, "hidden": 32}, num_epochs=1, batch_size=128)
    return dl.train_recipe(recipe, mnist.subset(6000, 1000)).model.eval()


@pytest.fixture(scope="module")
def onnx_file(trained_cnn, tmp_path_factory):
    return export.export_onnx(trained_cnn, tmp_path_factory.mktemp("onnx") / "cnn.onnx")


def test_onnx_matches_eager_with_any_batch_size(trained_cnn, onnx_file, mnist):
    session = export.ort_session(onnx_file, threads=1)
    assert session.get_inputs()[0].shape[0] == "batch"  # the dynamic dimension
    for n in (1, 7, 300):
        X = mnist.X_test[:n]
        result = export.parity(export.logits_of(trained_cnn, X), export.run_onnx(session, X))
        assert result["max_abs_diff"] < 1e-4 and result["same_prediction"] == 1.0


def test_onnx_file_is_reproducible_and_leaks_no_paths(trained_cnn, onnx_file, tmp_path):
    data = onnx_file.read_bytes()
    assert b"stack_trace" not in data and dl.export.__file__.encode() not in data
    again = export.export_onnx(trained_cnn, tmp_path / "again.onnx")
    assert again.read_bytes() == data  # same weights, same bytes


def test_int8_model_is_smaller_and_close(trained_cnn, onnx_file, mnist):
    int8 = export.quantize_int8(onnx_file, onnx_file.with_name("cnn.int8.onnx"))
    assert int8.stat().st_size < 0.4 * onnx_file.stat().st_size
    assert not list(int8.parent.glob("*.prepared.onnx"))
    X, y = mnist.X_test[:1000], mnist.y_test[:1000]
    fp32 = (export.logits_of(trained_cnn, X).argmax(1) == y).double().mean().item()
    q = (export.run_onnx(export.ort_session(int8), X).argmax(1) == y).double().mean().item()
    assert abs(fp32 - q) < 0.01


def test_torch_export_round_trip(trained_cnn, tmp_path, mnist):
    path = export.export_program(trained_cnn, tmp_path / "cnn.pt2")
    program = export.load_program(path)
    X = mnist.X_test[:33]
    torch.testing.assert_close(program(X), export.logits_of(trained_cnn, X))


def test_parity_reports_differences():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.5], [2.0, 1.0]])
    assert export.parity(a, b) == {"max_abs_diff": 2.0, "same_prediction": 0.5}


def test_runners_return_what_the_model_and_session_compute(trained_cnn, onnx_file, mnist):
    X = mnist.X_test[:5]
    run = export.eager_runner(trained_cnn)
    logits = run(X)
    assert logits.is_inference() and torch.equal(logits, export.logits_of(trained_cnn, X))
    session = export.ort_session(onnx_file, threads=1)
    (out,) = export.ort_runner(session)(X)
    assert torch.equal(torch.from_numpy(out), export.run_onnx(session, X))


def test_cached_onnx_is_reused_and_a_changed_file_is_exported_again(
    trained_cnn, onnx_file, tmp_path, monkeypatch
):
    cached = export.cached_onnx(trained_cnn, tmp_path / "cache", "key")
    assert cached.read_bytes() == onnx_file.read_bytes()  # the export, deterministic
    assert sorted(p.name for p in cached.parent.iterdir()) == ["key.onnx", "key.onnx.sha256"]
    calls = []
    real = export.export_onnx
    monkeypatch.setattr(export, "export_onnx", lambda *a: calls.append(a) or real(*a))
    assert export.cached_onnx(trained_cnn, tmp_path / "cache", "key") == cached
    assert calls == []  # the recorded hash matched: reused
    cached.write_bytes(cached.read_bytes()[:-10] + b"0123456789")  # stale or tampered
    assert export.cached_onnx(trained_cnn, tmp_path / "cache", "key").read_bytes() == (
        onnx_file.read_bytes()
    )
    assert len(calls) == 1
    (tmp_path / "cache" / "key.onnx.sha256").unlink()  # no record: exported again
    export.cached_onnx(trained_cnn, tmp_path / "cache", "key")
    assert len(calls) == 2


def test_verify_onnx_accepts_the_export_and_refuses_another_model(trained_cnn, onnx_file, mnist):
    X = mnist.X_test[:64]
    session = export.ort_session(onnx_file, threads=1)
    agree, account = export.verify_onnx(trained_cnn, session, X)
    assert agree and "0 of 64 labels differ" in account
    other = copy.deepcopy(trained_cnn)
    with torch.no_grad():
        next(other.parameters()).mul_(1.01)  # a slightly different model
    agree, account = export.verify_onnx(other, session, X)
    assert not agree and "tolerance 0.0001" in account
