"""Export for deployment: ONNX (dynamo), ONNX Runtime sessions, int8 quantization, torch.export."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn


def export_onnx(model: nn.Module, path: Path) -> Path:
    """Export with torch.onnx.export(dynamo=True) and a dynamic batch dimension named 'batch'."""
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
    path.parent.mkdir(parents=True, exist_ok=True)
    program.save(str(path))
    return path


def ort_session(path: Path, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session, with `threads` intra-op threads (default: torch's count)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


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


def parity(reference: Tensor, other: Tensor) -> dict:
    """Max absolute logit difference and share of identical predicted labels."""
    return {
        "max_abs_diff": (reference - other).abs().max().item(),
        "same_prediction": (reference.argmax(1) == other.argmax(1)).double().mean().item(),
    }
