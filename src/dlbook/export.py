"""Export for deployment: ONNX (dynamo), ONNX Runtime sessions, int8 quantization, torch.export."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn


def onnx_program(model: nn.Module) -> Any:
    """torch.onnx.export(dynamo=True) with a dynamic batch dimension named 'batch', in memory."""
    model = model.cpu().eval()
    example = (torch.zeros(2, 1, 28, 28),)
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter narrates every stage
        program = torch.onnx.export(
            model,
            example,
            dynamo=True,
            input_names=["X"],
            output_names=["logits"],
            dynamic_shapes={"X": {0: torch.export.Dim("batch")}},
        )
    if program is None:  # only when exporting to a file given as an argument, not here
        raise RuntimeError("torch.onnx.export returned no ONNX program")
    # The exporter tags every node with debug metadata, including stack traces with this
    # machine's file paths: drop it, so the file leaks no paths and the same weights give the
    # same bytes wherever the repository is cloned.
    graphs: list[Any] = [program.model.graph, *program.model.functions.values()]
    for graph in graphs:
        for node in graph.all_nodes():  # subgraphs included
            node.metadata_props.clear()
    return program


def export_onnx(model: nn.Module, path: Path) -> Path:
    """Export with torch.onnx.export(dynamo=True) and a dynamic batch dimension named 'batch'."""
    program = onnx_program(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    program.save(str(path))
    return path


def onnx_bytes(model: nn.Module) -> bytes:
    """The same export as `export_onnx`, serialized in memory: nothing is written to disk."""
    return onnx_program(model).model_proto.SerializeToString()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cached_onnx(model: nn.Module, cache_dir: Path, key: str) -> Path:
    """`model` exported to ONNX as cache_dir/<key>.onnx, reused only while the file's SHA-256
    matches the one recorded beside it when it was written; else exported again.

    `key` names the weights (their SHA-256), so other weights never find this file. Writes go to
    a temporary name first and are renamed into place, so a concurrent reader sees either no
    file, or a whole one with its record (the export is deterministic: same weights, same bytes).
    """
    path = cache_dir / f"{key}.onnx"
    record = cache_dir / f"{key}.onnx.sha256"
    with contextlib.suppress(OSError):  # missing or unreadable: export again
        if record.read_text().strip() == _sha256(path):
            return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = export_onnx(model, cache_dir / f".{key}.{os.getpid()}.onnx")
    tmp_record = tmp.with_name(tmp.name + ".sha256")
    tmp_record.write_text(_sha256(tmp) + "\n")
    os.replace(tmp, path)
    os.replace(tmp_record, record)
    return path


def ort_session(path: Path | bytes, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session of a file or of serialized bytes, with `threads` intra-op
    threads (default: torch's count)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    model = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def run_onnx(session: Any, X: Tensor, batch_size: int = 1000) -> Tensor:
    """Logits (N, 10) from an ONNX Runtime session, in batches."""
    out = [
        session.run(None, {"X": X[i : i + batch_size].cpu().numpy()})[0]
        for i in range(0, len(X), batch_size)
    ]
    return torch.from_numpy(np.concatenate(out))


def quantize_int8(src: Path, dst: Path) -> Path:
    """Dynamic int8 quantization (weights int8, activations quantized on the fly) with ORT."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = dst.with_name(dst.stem + ".prepared.onnx")
    logging.getLogger().setLevel(logging.ERROR)  # ORT's tooling logs advice at WARNING
    quant_pre_process(str(src), str(prepared))  # shape inference and graph optimization
    quantize_dynamic(str(prepared), str(dst), weight_type=QuantType.QInt8)
    prepared.unlink()
    return dst


def export_program(model: nn.Module, path: Path) -> Path:
    """Save a torch.export program (.pt2) with a dynamic batch dimension."""
    example = (torch.zeros(2, 1, 28, 28),)
    program = torch.export.export(
        model.cpu().eval(), example, dynamic_shapes={"X": {0: torch.export.Dim("batch")}}
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, str(path))
    return path


def load_program(path: Path) -> Callable[[Tensor], Tensor]:
    """Load a saved torch.export program as a callable module."""
    return torch.export.load(str(path)).module()


@torch.inference_mode()
def logits_of(fn: Callable[[Tensor], Tensor], X: Tensor, batch_size: int = 1000) -> Tensor:
    """Logits (N, 10) of a callable model, in batches."""
    return torch.cat([fn(X[i : i + batch_size]) for i in range(0, len(X), batch_size)])


def eager_runner(model: nn.Module) -> Callable[[Tensor], Tensor]:
    """X -> logits of an eager (or torch.compile'd) model under inference mode, for timing."""

    def run(X: Tensor) -> Tensor:
        with torch.inference_mode():
            return model(X)

    return run


def ort_runner(session: Any) -> Callable[[Tensor], list]:
    """X -> the outputs of an ONNX Runtime session on X (one batch, no splitting), for timing."""
    return lambda X: session.run(None, {"X": X.numpy()})


def verify_onnx(model: nn.Module, session: Any, X: Tensor, atol: float = 1e-4) -> tuple[bool, str]:
    """Do an ONNX Runtime session and the eager model agree on X (N, 1, 28, 28)?

    Agreement: max |logit difference| <= atol, and the same label for every image whose eager
    top-two margin exceeds 2 * atol (below that, rounding may legitimately swap a near-tie).
    Returns (agree, a one-line account).
    """
    eager = logits_of(model.cpu().eval(), X)  # (N, 10)
    onnx = run_onnx(session, X)  # (N, 10)
    diff = (eager - onnx).abs().max().item()
    top2 = eager.topk(2, dim=1).values  # (N, 2)
    clear = (top2[:, 0] - top2[:, 1]) > 2 * atol
    swapped = int((eager.argmax(1) != onnx.argmax(1))[clear].sum())
    account = (
        f"max |logit difference| {diff:.2e} (tolerance {atol:g}), "
        f"{swapped} of {len(X)} labels differ"
    )
    return diff <= atol and swapped == 0, account


def parity(reference: Tensor, other: Tensor) -> dict:
    """Max absolute logit difference and share of identical predicted labels."""
    return {
        "max_abs_diff": (reference - other).abs().max().item(),
        "same_prediction": (reference.argmax(1) == other.argmax(1)).double().mean().item(),
    }
