"""An HTTP inference service for a packaged MNIST model (FastAPI on uvicorn).

python -m dlbook.serve --model <folder> [--host 127.0.0.1] [--port 8000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import IO, Annotated, Any

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError, field_validator
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartParser

from .checkpoint import CheckpointError
from .package import load_package
from .preprocess import (
    InputError,
    NoDigitError,
    check_array,
    decode_image,
    normalize_pixels,
    to_mnist_format,
)

MAX_UPLOAD_BYTES = 8 * 1024 * 1024  # 8 MiB: a phone photo, or a full batch of JSON pixels
MAX_BATCH = 256
IMAGE_TYPES = ("image/png", "image/jpeg")

# The request contract, as JSON Schema in /openapi.json.
Row = Annotated[list[Annotated[float, Field(ge=0, le=1)]], Field(min_length=28, max_length=28)]
Pixels = Annotated[
    list[Row],
    Field(
        min_length=28,
        max_length=28,
        description="28x28 numbers in [0, 1], white ink on black (as in MNIST), row by row",
    ),
]


class PixelsRequest(BaseModel):
    """POST /predict as JSON: one digit as 28x28 pixels."""

    pixels: Pixels

    @field_validator("pixels", mode="before")
    @classmethod
    def _readable_errors(cls, values: object) -> object:
        check_array(values)  # raises InputError naming the problem (shape, NaN, range)
        return values


class BatchRequest(BaseModel):
    """POST /predict/batch as JSON: 1 to MAX_BATCH digits, each 28x28 pixels."""

    images: Annotated[list[Pixels], Field(min_length=1, max_length=MAX_BATCH)]

    @field_validator("images", mode="before")
    @classmethod
    def _readable_errors(cls, values: object) -> object:
        if not isinstance(values, list) or not 1 <= len(values) <= MAX_BATCH:
            raise InputError(f"images must be a list of 1 to {MAX_BATCH} arrays of 28x28")
        for i, image in enumerate(values):
            check_array(image, f"images[{i}]")
        return values


class Prediction(BaseModel):
    label: int = Field(description="the predicted digit, 0-9")
    probabilities: list[float] = Field(description="softmax probabilities of the digits 0-9")


class PredictResponse(Prediction):
    model_version: str = Field(description="name:version+first 12 hex digits of the weights' SHA")
    latency_ms: float = Field(description="server-side inference time")


class BatchResponse(BaseModel):
    predictions: list[Prediction]
    model_version: str
    latency_ms: float


class Health(BaseModel):
    status: str
    model_version: str
    architecture: dict[str, Any]
    test_accuracy: float | None


class ErrorResponse(BaseModel):
    """Every 4xx answer: a message naming the problem, and the status again."""

    error: str
    status: int


class RequestError(Exception):
    """A client error: HTTP status and a message naming the problem."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing anything over `limit` bytes before reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"upload of {int(declared):,} bytes exceeds the limit of {limit:,}")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise RequestError(413, f"upload exceeds the limit of {limit:,} bytes")
    if not body:
        raise RequestError(400, "the request body is empty: send a PNG or JPEG, or JSON pixels")
    return bytes(body)


# One parser per media type: (request, size-checked body, batch?) -> (N, 28, 28) pixels in [0, 1].
Parser = Callable[[Request, bytes, bool], Awaitable[np.ndarray]]


async def _parse_json(request: Request, body: bytes, batch: bool) -> np.ndarray:
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RequestError(400, f"the body is not valid JSON ({err})") from None
    field = "images" if batch else "pixels"
    try:
        if batch:
            return np.asarray(BatchRequest.model_validate(data).images, dtype=np.float32)
        return np.asarray([PixelsRequest.model_validate(data).pixels], dtype=np.float32)
    except ValidationError as err:
        raise RequestError(422, _validation_message(err, field)) from None


def _validation_message(err: ValidationError, field: str) -> str:
    """Our own message where a validator raised InputError, else pydantic's, for one field."""
    first = err.errors()[0]
    cause = first.get("ctx", {}).get("error")
    if isinstance(cause, InputError):
        return str(cause)
    if first["type"] in ("missing", "model_type"):
        return f"the JSON must be an object with a '{field}' field"
    return f"{field}: {first['msg']}"


async def _parse_image(request: Request, body: bytes, batch: bool) -> np.ndarray:
    return _image(body, _media_type(request))


async def _parse_form(request: Request, body: bytes, batch: bool) -> np.ndarray:
    async def replay() -> AsyncGenerator[bytes, None]:  # the body, already size-checked
        yield body
        yield b""

    name = "files" if batch else "file"
    try:
        form = await MultiPartParser(request.headers, replay()).parse()
    except Exception as err:  # malformed multipart data: the parser's errors vary
        raise RequestError(400, f"the multipart form could not be parsed ({err})") from None
    try:
        fields = form.getlist(name) or form.getlist("file")
        uploads = [f for f in fields if isinstance(f, UploadFile)]
        if not fields or len(uploads) != len(fields):
            raise RequestError(400, f"the form has no '{name}' upload")
        images = [_image(await f.read(), f.content_type) for f in uploads[: MAX_BATCH + 1]]
        return np.concatenate(images)
    finally:
        await form.close()


PARSERS: dict[str, Parser] = {
    "application/json": _parse_json,
    "multipart/form-data": _parse_form,
    "image/png": _parse_image,
    "image/jpeg": _parse_image,
}
BATCH_TYPES = ("application/json", "multipart/form-data")


async def _pixels(request: Request, limit: int, batch: bool) -> np.ndarray:
    """The request's digits as (N, 28, 28) pixels in [0, 1], by its media type."""
    kind = _media_type(request)
    if kind not in (BATCH_TYPES if batch else PARSERS):
        expected = "application/json or multipart/form-data" + (
            "" if batch else ", image/png, image/jpeg"
        )
        raise RequestError(415, f"unsupported media type {kind or 'none'!r}; send {expected}")
    return await PARSERS[kind](request, await _read_body(request, limit), batch)


def _image(data: bytes, kind: str | None) -> np.ndarray:
    """PNG/JPEG bytes -> (1, 28, 28) pixels prepared as MNIST was."""
    if kind and kind not in IMAGE_TYPES + ("application/octet-stream",):
        raise RequestError(415, f"unsupported upload type {kind!r}; send a PNG or JPEG")
    try:
        return to_mnist_format(decode_image(data))[None]
    except NoDigitError as err:  # a valid image with nothing to classify
        raise RequestError(422, str(err)) from None
    except InputError as err:  # not decodable as a PNG or JPEG
        raise RequestError(400, str(err)) from None


def card_normalization(card: dict) -> tuple[float, float]:
    """The (mean, std) a model card says its inputs were standardized with."""
    try:
        norm = card["input"]["normalization"]
        mean, std = float(norm["mean"]), float(norm["std"])
    except (KeyError, TypeError, ValueError):
        raise CheckpointError("the model card gives no input.normalization mean and std") from None
    if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
        raise CheckpointError(f"the model card's normalization {norm} needs a finite mean, std > 0")
    return mean, std


def _request_body(model: type[BaseModel], field: str, images: bool) -> dict:
    """OpenAPI for a body that may be JSON (`model`), a multipart form or raw image bytes."""
    binary = {"type": "string", "format": "binary"}
    upload = {"type": "array", "items": binary} if field == "files" else binary
    content = {
        "application/json": {"schema": model.model_json_schema()},
        "multipart/form-data": {
            "schema": {"type": "object", "properties": {field: upload}, "required": [field]}
        },
    }
    if images:
        content.update({kind: {"schema": binary} for kind in IMAGE_TYPES})
    return {"requestBody": {"required": True, "content": content}}


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 413, 415, 422)
}


def create_app(model_dir: Path, max_upload_bytes: int = MAX_UPLOAD_BYTES) -> FastAPI:
    """The service: GET /health, POST /predict, POST /predict/batch."""
    model, card = load_package(model_dir)
    mean, std = card_normalization(card)  # applied to every input, as the model was trained
    version = f"{card['name']}:{card['version']}+{card['sha256'][:12]}"
    app = FastAPI(title="dlbook MNIST service", version=card["version"])

    @app.exception_handler(RequestError)
    async def client_error(request: Request, err: RequestError) -> JSONResponse:
        return JSONResponse({"error": err.message, "status": err.status}, status_code=err.status)

    @torch.inference_mode()
    def infer(X: torch.Tensor) -> tuple[list[int], list[list[float]]]:
        probs = torch.softmax(model(X), dim=1)  # (N, 10)
        return probs.argmax(1).tolist(), probs.tolist()

    @app.get("/health")
    def health() -> Health:
        return Health(
            status="ok",
            model_version=version,
            architecture=card["architecture"],
            test_accuracy=card["metrics"].get("test_acc"),
        )

    @app.post(
        "/predict", responses=ERRORS, openapi_extra=_request_body(PixelsRequest, "file", True)
    )
    async def predict(request: Request) -> PredictResponse:
        pixels = await _pixels(request, max_upload_bytes, batch=False)
        if len(pixels) != 1:
            raise RequestError(422, "/predict takes one image; use /predict/batch for several")
        X = normalize_pixels(pixels, mean, std)  # (1, 1, 28, 28)
        tic = time.perf_counter()
        labels, probs = await run_in_threadpool(infer, X)
        latency_ms = round(1e3 * (time.perf_counter() - tic), 3)
        return PredictResponse(
            label=labels[0], probabilities=probs[0], model_version=version, latency_ms=latency_ms
        )

    @app.post(
        "/predict/batch",
        responses=ERRORS,
        openapi_extra=_request_body(BatchRequest, "files", False),
    )
    async def predict_batch(request: Request) -> BatchResponse:
        pixels = await _pixels(request, max_upload_bytes, batch=True)
        if len(pixels) > MAX_BATCH:
            raise RequestError(422, f"at most {MAX_BATCH} images per batch")
        X = normalize_pixels(pixels, mean, std)  # (N, 1, 28, 28)
        tic = time.perf_counter()
        labels, probs = await run_in_threadpool(infer, X)
        return BatchResponse(
            predictions=[Prediction(label=k, probabilities=p) for k, p in zip(labels, probs)],
            model_version=version,
            latency_ms=round(1e3 * (time.perf_counter() - tic), 3),
        )

    return app


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` right now (the operating system picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _wait_for_health(proc: subprocess.Popen, url: str, timeout: float, log: IO[bytes]) -> None:
    """Return once GET url/health answers 200; RuntimeError with the server's output if not."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            problem = f"exited with status {proc.returncode}"
            break
        try:
            with opener.open(f"{url}/health", timeout=1) as reply:
                if reply.status == 200:
                    return
        except OSError:  # not listening yet (urllib's errors are OSErrors)
            pass
        if time.monotonic() > deadline:
            problem = f"did not answer {url}/health within {timeout:g} s"
            break
        time.sleep(0.2)
    log.seek(0)
    output = log.read().decode(errors="replace").strip()
    raise RuntimeError(f"the server {problem}; its output:\n{output}")


@contextlib.contextmanager
def running_server(
    model_dir: Path | str,
    *,
    threads: int = 1,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    timeout: float = 60.0,
) -> Iterator[str]:
    """Run `python -m dlbook.serve` on a free loopback port for the block; yield its base URL.

    Waits until /health answers (RuntimeError with the server's output if it exits or
    `timeout` seconds pass), and stops the server on exit: SIGTERM (uvicorn shuts down
    gracefully), then SIGKILL if it has not stopped within 10 s.
    """
    port = free_port()
    command = [sys.executable, "-m", "dlbook.serve", "--model", str(model_dir)]
    command += ["--port", str(port), "--threads", str(threads)]
    command += ["--max-upload-bytes", str(max_upload_bytes)]
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:  # a file, not a pipe: a chatty server never blocks
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_for_health(proc, url, timeout, log)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, load the model and serve until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m dlbook.serve", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument(
        "--model", type=Path, required=True, help="folder with model.safetensors and model.json"
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="interface to bind (default: loopback only)"
    )
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (for the whole process)"
    )
    parser.add_argument("--max-upload-bytes", type=int, default=MAX_UPLOAD_BYTES)
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535 or args.threads < 1 or args.max_upload_bytes < 1:
        parser.error("--port must be 0-65535, --threads and --max-upload-bytes at least 1")
    torch.set_num_threads(args.threads)
    try:
        app = create_app(args.model, args.max_upload_bytes)
    except (CheckpointError, KeyError) as err:
        print(f"error: cannot load the model from {args.model}: {err}", file=sys.stderr)
        return 2
    import uvicorn

    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
