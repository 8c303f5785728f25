"""An HTTP inference service for a packaged MNIST model (FastAPI on uvicorn).

python -m dlbook.serve --model <folder> [--host 127.0.0.1] [--port 8000] [--docs]
                       [--backend onnx|eager] [--threads 1] [--batch-window-ms 2 --max-batch 32]
                       [--workers 1]

Backend: by default the package's model is exported to ONNX once (cached beside the package in
.onnx-cache/, keyed by the weights' SHA-256 and re-exported unless the file's own SHA-256 matches)
and run with ONNX Runtime; before serving, ONNX Runtime must agree with eager PyTorch on a fixed
batch (max |logit difference| <= 1e-4, same labels), or the service refuses to start (exit 2).
--backend eager serves the PyTorch model itself.

Threads: one process, one event loop (HTTP), a thread pool for decoding uploads, and --threads
intra-op threads for inference (ONNX Runtime's or torch's). On a machine shared with the clients
(or other services), 1 is usually best: more threads compete for the same cores.

Workers: --workers N runs N such processes on the same port, each loading the model and
listening on its own SO_REUSEPORT socket, so that the kernel spreads connections over them
(`dlbook.workers`; outside Linux, uvicorn's own workers).

Batching: with --batch-window-ms > 0, requests arriving within that many milliseconds (up to
--max-batch images) are run as one inference call and each answered with its own rows; 0 turns
it off.

Limits against slow or abusive clients (all configurable, see --help): a request body must
arrive within --body-timeout seconds (else 408), an idle keep-alive connection closes after
--keep-alive-timeout seconds, and beyond --max-concurrency connections the answer is 503.

Security: --key-file (or $DLBOOK_MODEL_KEY) serves a package encrypted by `dlbook.vault`,
decrypted in memory (the ONNX export too: nothing is written). --api-keys FILE (made by
`python -m dlbook.access add`) requires `Authorization: Bearer <key>` on every request (401
without; GET /health then answers only {"status": "ok"}); --rate-limit N/s [--burst B] answers
429 with Retry-After beyond it, per key; --ssl-certfile/--ssl-keyfile serve HTTPS. Every request
is logged in one line on stderr (`dlbook.access`). The service binds loopback by default and
refuses another address without --api-keys, unless --insecure-public.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import hashlib
import ipaddress
import json
import math
import os
import signal
import socket
import ssl
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
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, ValidationError, field_validator
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartParser

from . import access, export, vault
from . import workers as workers_module
from .checkpoint import CheckpointError
from .cli import parser_for
from .package import validate_card
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
MAX_JSON_DEPTH = 4  # {"images": [image [row [number]]]}: deeper JSON is refused unread
BODY_TIMEOUT = 10.0  # seconds for a whole request body to arrive
KEEP_ALIVE_TIMEOUT = 5  # seconds an idle connection stays open (uvicorn's default)
MAX_CONCURRENCY = 64  # connections served at once; beyond them 503
BACKENDS = ("onnx", "eager")
VERIFY_ATOL = 1e-4  # float32 logits of two runtimes summing in different orders differ ~1e-6
BATCH_WINDOW_MS = 2.0  # collect concurrent requests this long for one inference call (0: off)
BATCH_IMAGES = 32  # most images in one collected inference call

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
    backend: str = Field(description="what runs the model: 'onnx' (ONNX Runtime) or 'eager'")
    architecture: dict[str, Any]
    test_accuracy: float | None


class ErrorResponse(BaseModel):
    """Every 4xx answer: a message naming the problem, and the status again."""

    error: str
    status: int


class RequestError(Exception):
    """A client error: HTTP status and a message naming the problem."""

    def __init__(self, status: int, message: str, close: bool = False) -> None:
        super().__init__(message)
        self.status, self.message = status, message
        self.close = close  # the body was not read: the connection cannot carry another request


def error_response(status: int, message: str, close: bool = False) -> JSONResponse:
    """The JSON error answer, with `Connection: close` where the connection ends."""
    headers = {"connection": "close"} if close else None
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def _read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The request body, refusing anything over `limit` bytes before reading it all, and a body
    that has not arrived within `timeout` seconds (a stalled client would hold a connection)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        message = f"upload of {int(declared):,} bytes exceeds the limit of {limit:,}"
        raise RequestError(413, message, close=True)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    body = bytearray()
    chunks = request.stream().__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(chunks.__anext__(), deadline - loop.time())
        except StopAsyncIteration:
            break
        except asyncio.TimeoutError:
            message = f"the request body did not arrive within {timeout:g} s"
            raise RequestError(408, message, close=True) from None
        body.extend(chunk)
        if len(body) > limit:
            raise RequestError(413, f"upload exceeds the limit of {limit:,} bytes", close=True)
    if not body:
        raise RequestError(400, "the request body is empty: send a PNG or JPEG, or JSON pixels")
    return bytes(body)


# What to do with a request's pixels (N, 28, 28) once decoded (normalize them, run the model):
# it runs in the same thread pool call as the decoding, saving a hop per request.
Finish = Callable[[np.ndarray], Any]
# One parser per media type: (request, size-checked body, batch?, finish) -> finish(pixels),
# the pixels in [0, 1]. The CPU work runs in the thread pool: the event loop stays free.
Parser = Callable[[Request, bytes, bool, Finish], Awaitable[Any]]


async def _parse_json(request: Request, body: bytes, batch: bool, finish: Finish) -> Any:
    return await run_in_threadpool(lambda: finish(_json_pixels(body, batch)))


def _json_depth(data: object, limit: int) -> int:
    """Nesting depth of parsed JSON, counted without recursion; stops once past `limit`."""
    depth, level = 0, [data]
    while level and depth <= limit:
        depth += 1
        children: list[object] = []
        for node in level:
            if isinstance(node, dict):
                children.extend(node.values())
            elif isinstance(node, list):
                children.extend(node)
        level = [c for c in children if isinstance(c, (dict, list))]
    return depth


def _json_pixels(body: bytes, batch: bool) -> np.ndarray:
    """JSON {"pixels": ...} or {"images": [...]} -> (N, 28, 28); RequestError naming the fault."""
    try:
        data = json.loads(body)
    except RecursionError:
        raise RequestError(400, "the JSON is nested too deeply to parse") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RequestError(400, f"the body is not valid JSON ({err})") from None
    except ValueError:  # Python refuses to convert integers of over 4,300 digits
        raise RequestError(400, "the JSON holds a number with too many digits") from None
    if _json_depth(data, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        message = f"the JSON is nested too deeply: digits need at most {MAX_JSON_DEPTH} levels"
        raise RequestError(400, message)
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


async def _parse_image(request: Request, body: bytes, batch: bool, finish: Finish) -> Any:
    kind = _media_type(request)
    return await run_in_threadpool(lambda: finish(_image(body, kind)))


async def _parse_form(request: Request, body: bytes, batch: bool, finish: Finish) -> Any:
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
        images = [
            await run_in_threadpool(_image, await f.read(), f.content_type)
            for f in uploads[: MAX_BATCH + 1]
        ]
        return await run_in_threadpool(finish, np.concatenate(images))
    finally:
        await form.close()


PARSERS: dict[str, Parser] = {
    "application/json": _parse_json,
    "multipart/form-data": _parse_form,
    "image/png": _parse_image,
    "image/jpeg": _parse_image,
}
BATCH_TYPES = ("application/json", "multipart/form-data")


async def _pixels(request: Request, limit: int, timeout: float, batch: bool, finish: Finish) -> Any:
    """finish(the request's digits as (N, 28, 28) pixels in [0, 1]), parsed by its media type."""
    kind = _media_type(request)
    if kind not in (BATCH_TYPES if batch else PARSERS):
        expected = "application/json or multipart/form-data" + (
            "" if batch else ", image/png, image/jpeg"
        )
        message = f"unsupported media type {kind or 'none'!r}; send {expected}"
        raise RequestError(415, message, close=True)  # refused unread
    body = await _read_body(request, limit, timeout)
    return await PARSERS[kind](request, body, batch, finish)


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


def _json(content: dict) -> Response:
    """A 200 JSON answer from plain values (the declared response models document it)."""
    return Response(json.dumps(content, allow_nan=False).encode(), media_type="application/json")


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


class BackendError(RuntimeError):
    """The chosen backend cannot serve the model (export failed, or it disagrees with eager)."""


# A backend: normalized inputs (N, 1, 28, 28) -> logits (N, 10) as a float32 array.
Runner = Callable[[torch.Tensor], np.ndarray]


def _verification_batch(mean: float, std: float) -> torch.Tensor:
    """A fixed batch (32, 1, 28, 28): noise, sparse strokes and a blank image, normalized."""
    gen = torch.Generator().manual_seed(0)
    noise = torch.rand(16, 28, 28, generator=gen)
    sparse = (torch.rand(15, 28, 28, generator=gen) > 0.85).float()
    pixels = torch.cat([noise, sparse, torch.zeros(1, 28, 28)]).unsqueeze(1)
    return (pixels - mean) / std


def onnx_runner(
    model: torch.nn.Module,
    key: str,
    cache_dir: Path | None,
    X_check: torch.Tensor,
    threads: int,
    *,
    persist: bool = True,
) -> tuple[Runner, str]:
    """The model exported to ONNX (cached in `cache_dir` under `key`, or in a temporary folder
    when `cache_dir` is None or not writable; in memory only unless `persist`) and run by ONNX
    Runtime, once it agrees with eager on X_check. Returns (runner, a one-line account);
    BackendError if it cannot be used."""
    try:
        if persist:
            session, where = _onnx_session(model, key, cache_dir, threads)
        else:  # an encrypted package's model never reaches the disk in plaintext
            session = export.ort_session(export.onnx_bytes(model), threads)
            where = "exported in memory, nothing written"
    except Exception as err:  # the exporter's and ONNX Runtime's failures vary
        raise BackendError(f"could not export the model to ONNX Runtime ({err})") from None
    agree, account = export.verify_onnx(model, session, X_check, VERIFY_ATOL)
    if not agree:
        raise BackendError(
            f"ONNX Runtime disagrees with eager PyTorch on the check batch: {account}; "
            "serve with --backend eager"
        )
    return (lambda X: session.run(None, {"X": X.numpy()})[0]), f"onnx ({where}; {account})"


def _onnx_session(
    model: torch.nn.Module, key: str, cache_dir: Path | None, threads: int
) -> tuple[Any, str]:
    """An ONNX Runtime session of the model cached in `cache_dir` (a temporary folder if that is
    None or not writable), and where the file is."""
    try:
        if cache_dir is None:
            raise OSError("no cache folder")
        session = export.ort_session(export.cached_onnx(model, cache_dir, key), threads)
        return session, f"cached in {cache_dir}"
    except OSError:  # read-only package folder: export afresh, keep nothing
        with tempfile.TemporaryDirectory() as tmp:  # ORT reads the file once, at start
            session = export.ort_session(export.export_onnx(model, Path(tmp) / "m.onnx"), threads)
        return session, "exported to a temporary folder"


def eager_runner(model: torch.nn.Module) -> Runner:
    """The PyTorch model itself, under inference mode."""
    run = export.eager_runner(model)
    return lambda X: run(X).numpy()


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (N, 10) logits, stable for large ones."""
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# Inference: normalized inputs (N, 1, 28, 28) -> (probabilities (N, 10), milliseconds).
Infer = Callable[[torch.Tensor], tuple[np.ndarray, float]]


Job = tuple[torch.Tensor, asyncio.Future, float]  # inputs, where the answer goes, arrival time


class Batcher:
    """Collects concurrent requests' inputs for up to `window_ms` (or `max_batch` images), runs
    one inference call for all of them in the thread pool, and answers each with its own rows.

    One worker task per event loop takes requests from a queue; a request of `max_batch`
    images or more runs alone.
    """

    def __init__(self, infer: Infer, window_ms: float, max_batch: int) -> None:
        self.infer, self.window_s, self.max_batch = infer, window_ms / 1e3, max_batch
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[Job] = asyncio.Queue()
        self._worker: asyncio.Task | None = None

    async def __call__(self, X: torch.Tensor) -> tuple[np.ndarray, float]:
        """Probabilities (N, 10) for X (N, 1, 28, 28), and the batch's inference time in ms."""
        if len(X) >= self.max_batch:
            return await run_in_threadpool(self.infer, X)
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # first call, or a new event loop (tests)
            self._loop, self._queue = loop, asyncio.Queue()
            self._worker = loop.create_task(self._work(self._queue))
        future: asyncio.Future[tuple[np.ndarray, float]] = loop.create_future()
        self._queue.put_nowait((X, future, loop.time()))
        return await future

    async def _work(self, queue: asyncio.Queue[Job]) -> None:
        loop = asyncio.get_running_loop()
        waiting: list[Job] = []  # taken from the queue, not yet run
        while True:
            if not waiting:
                waiting.append(await queue.get())
            # the oldest request waits at most the window (less if it queued during inference)
            await asyncio.sleep(max(0.0, waiting[0][2] + self.window_s - loop.time()))
            while not queue.empty():
                waiting.append(queue.get_nowait())
            items, n = [], 0
            while waiting and n + len(waiting[0][0]) <= self.max_batch:
                items.append(waiting.pop(0))
                n += len(items[-1][0])
            try:
                probs, ms = await run_in_threadpool(self.infer, torch.cat([j[0] for j in items]))
            except Exception as err:  # a bug: every request of the batch gets the 500
                for _, future, _ in items:
                    if not future.done():
                        future.set_exception(err)
                continue
            start = 0
            for x, future, _ in items:
                if not future.done():  # not cancelled (client gone)
                    future.set_result((probs[start : start + len(x)], ms))
                start += len(x)


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 413, 415, 422)
}


def create_app(
    model_dir: Path,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    *,
    body_timeout: float = BODY_TIMEOUT,
    docs: bool = False,
    backend: str = "onnx",
    threads: int = 1,
    batch_window_ms: float = BATCH_WINDOW_MS,
    max_batch: int = BATCH_IMAGES,
    key_file: Path | None = None,
    api_keys: Path | None = None,
    rate_limit: float | None = None,
    burst: int | None = None,
) -> FastAPI:
    """The service: GET /health, POST /predict, POST /predict/batch (and with `docs`, /docs,
    /redoc and /openapi.json), running the model with `backend` ("onnx" or "eager") on
    `threads` intra-op threads, batching concurrent requests when `batch_window_ms` > 0.

    An encrypted package is decrypted in memory with the key in `key_file` (else in
    $DLBOOK_MODEL_KEY). With `api_keys` (a keys file) every request needs one of its keys; with
    `rate_limit` (requests per second) each key, or each client address without keys, may make
    `burst` requests at once (default: the rate rounded up), then `rate_limit` per second.
    Raises CheckpointError if the package is not usable (VaultError if its key is not),
    BackendError if the backend is not, AccessError if the keys or the limit are not.
    `app.state.backend_note` says what runs the model."""
    keys = access.KeyStore.load(api_keys) if api_keys is not None else None
    limiter = None
    if rate_limit is not None:
        limiter = access.RateLimiter(rate_limit, burst or max(1, math.ceil(rate_limit)))
    secret = vault.package_key(Path(model_dir), key_file)
    model, raw_card = vault.open_package(model_dir, secret)  # the card verified and validated
    card = validate_card(raw_card)
    norm = card.input.normalization  # applied to every input, as the model was trained
    version = f"{card.name}:{card.version}+{raw_card['sha256'][:12]}"
    if backend == "onnx":
        arch = json.dumps(card.architecture.model_dump(), sort_keys=True)
        key = hashlib.sha256(f"{raw_card['sha256']} {arch}".encode()).hexdigest()
        X_check = _verification_batch(norm.mean, norm.std)
        cache = Path(model_dir).resolve().parent / ".onnx-cache"
        run, note = onnx_runner(model, key, cache, X_check, threads, persist=secret is None)
    elif backend == "eager":
        run, note = eager_runner(model), "eager (PyTorch)"
    else:
        raise BackendError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")

    def infer(X: torch.Tensor) -> tuple[np.ndarray, float]:
        tic = time.perf_counter()
        probs = softmax(run(X))  # (N, 10)
        return probs, round(1e3 * (time.perf_counter() - tic), 3)

    batcher = Batcher(infer, batch_window_ms, max_batch) if batch_window_ms > 0 else None

    def prepare(pixels: np.ndarray, batch: bool) -> torch.Tensor:
        if not batch and len(pixels) != 1:
            raise RequestError(422, "/predict takes one image; use /predict/batch for several")
        if len(pixels) > MAX_BATCH:
            raise RequestError(422, f"at most {MAX_BATCH} images per batch")
        return normalize_pixels(pixels, norm.mean, norm.std)  # (N, 1, 28, 28)

    async def predict_probs(request: Request, batch: bool) -> tuple[np.ndarray, float]:
        """The request's probabilities (N, 10) and inference time (ms): parsing and inference
        in one thread pool call, or parsing there and inference in the next collected batch."""
        limits = (max_upload_bytes, body_timeout, batch)
        if batcher is None:
            return await _pixels(request, *limits, lambda p: infer(prepare(p, batch)))
        return await batcher(await _pixels(request, *limits, lambda p: prepare(p, batch)))

    health_body = Health(
        status="ok",
        model_version=version,
        backend=backend,
        architecture=card.architecture.model_dump(),
        test_accuracy=card.metrics.test_acc,
    )
    app = FastAPI(  # the interactive pages and the schema only when asked for
        title="dlbook MNIST service",
        version=card.version,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )

    @app.exception_handler(RequestError)
    async def client_error(request: Request, err: RequestError) -> JSONResponse:
        return error_response(err.status, err.message, err.close)

    @app.exception_handler(HTTPException)  # routing: 404 unknown path, 405 wrong method
    async def http_error(request: Request, err: HTTPException) -> JSONResponse:
        return error_response(err.status_code, str(err.detail))

    @app.exception_handler(Exception)  # a bug: answered, logged, and the connection closed
    async def server_error(request: Request, err: Exception) -> JSONResponse:
        return error_response(500, "internal server error", close=True)

    @app.get("/health")
    async def health() -> Health:
        return health_body

    # The answers are written as JSON directly (the declared models document them): building
    # and validating pydantic objects costs more per request than the ONNX Runtime inference.
    def route(path: str, response: type[BaseModel], body: type[BaseModel], single: bool) -> Any:
        """A POST endpoint documenting its JSON body and its upload field."""
        extra = _request_body(body, "file" if single else "files", single)
        return app.post(path, response_model=response, responses=ERRORS, openapi_extra=extra)

    @route("/predict", PredictResponse, PixelsRequest, single=True)
    async def predict(request: Request) -> Response:
        probs, latency_ms = await predict_probs(request, batch=False)
        label = int(probs[0].argmax())
        return _json(
            {
                "label": label,
                "probabilities": probs[0].tolist(),
                "model_version": version,
                "latency_ms": latency_ms,
            }
        )

    @route("/predict/batch", BatchResponse, BatchRequest, single=False)
    async def predict_batch(request: Request) -> Response:
        probs, latency_ms = await predict_probs(request, batch=True)
        predictions = [
            {"label": k, "probabilities": p}
            for k, p in zip(probs.argmax(1).tolist(), probs.tolist())
        ]
        return _json(
            {"predictions": predictions, "model_version": version, "latency_ms": latency_ms}
        )

    app.add_middleware(access.AccessControl, keys=keys, limiter=limiter)  # outside the routes
    app.state.backend_note = note
    return app


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` right now (the operating system picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _wait_for_health(
    proc: subprocess.Popen, url: str, timeout: float, log: IO[bytes], cafile: Path | None = None
) -> None:
    """Return once GET url/health answers 200 (over TLS trusting `cafile`, if given);
    RuntimeError with the server's output if not."""
    handlers: list[Any] = [urllib.request.ProxyHandler({})]  # loopback: no proxy
    if cafile is not None:
        handlers.append(
            urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=cafile))
        )
    opener = urllib.request.build_opener(*handlers)
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
    body_timeout: float = BODY_TIMEOUT,
    keep_alive_timeout: int = KEEP_ALIVE_TIMEOUT,
    max_concurrency: int = MAX_CONCURRENCY,
    docs: bool = False,
    backend: str = "onnx",
    batch_window_ms: float = BATCH_WINDOW_MS,
    max_batch: int = BATCH_IMAGES,
    workers: int = 1,
    key_file: Path | None = None,
    api_keys: Path | None = None,
    rate_limit: str | None = None,
    burst: int | None = None,
    ssl_certfile: Path | None = None,
    ssl_keyfile: Path | None = None,
    output: IO[bytes] | None = None,
) -> Iterator[str]:
    """Run `python -m dlbook.serve` on a free loopback port for the block; yield its base URL
    (https:// with `ssl_certfile`, which then also serves as the trusted certificate).

    The keywords after `timeout` are the server's options of the same names (see `main`),
    except `output`: a binary file to receive the server's stdout and stderr (the access log).

    Waits until /health answers (RuntimeError with the server's output if it exits or
    `timeout` seconds pass), and stops the server on exit: SIGTERM (uvicorn shuts down
    gracefully), then SIGKILL if it has not stopped within 10 s.
    """
    port = free_port()
    command = [sys.executable, "-m", "dlbook.serve", "--model", str(model_dir)]
    command += ["--port", str(port), "--threads", str(threads)]
    command += ["--max-upload-bytes", str(max_upload_bytes), "--body-timeout", str(body_timeout)]
    command += ["--keep-alive-timeout", str(keep_alive_timeout)]
    command += ["--max-concurrency", str(max_concurrency)] + (["--docs"] if docs else [])
    command += ["--backend", backend, "--batch-window-ms", str(batch_window_ms)]
    command += ["--max-batch", str(max_batch), "--workers", str(workers)]
    security: dict[str, object] = {"--key-file": key_file, "--api-keys": api_keys}
    security |= {"--ssl-certfile": ssl_certfile, "--ssl-keyfile": ssl_keyfile}
    security |= {"--rate-limit": rate_limit, "--burst": burst}
    command += [str(v) for flag, x in security.items() if x is not None for v in (flag, x)]
    url = f"{'https' if ssl_certfile else 'http'}://127.0.0.1:{port}"
    with contextlib.ExitStack() as stack:
        # a file, not a pipe: a chatty server never blocks
        log = output if output is not None else stack.enter_context(tempfile.TemporaryFile())
        proc = subprocess.Popen(  # its own process group: workers included, none outlives it
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            _wait_for_health(proc, url, timeout, log, ssl_certfile)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            with contextlib.suppress(ProcessLookupError):  # a worker left behind
                os.killpg(proc.pid, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, load the model and serve until interrupted."""
    parser = parser_for("dlbook.serve", __doc__)
    parser.add_argument(
        "--model", type=Path, required=True, help="folder with model.safetensors and model.json"
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="interface to bind (default: loopback only)"
    )
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="onnx",
        help="onnx: ONNX Runtime, exported once and verified against eager on load (refuses "
        "to start if they disagree); eager: PyTorch itself (default: %(default)s)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="intra-op threads for inference, ONNX Runtime's or torch's (default: %(default)s; "
        "more only if the cores are the service's alone: clients on the same cores make 1 "
        "the fastest)",
    )
    parser.add_argument(
        "--batch-window-ms",
        type=float,
        default=BATCH_WINDOW_MS,
        help="collect concurrent requests for up to this many ms and run them as one "
        "inference call; 0 turns batching off (default: %(default)s)",
    )
    parser.add_argument(
        "--max-batch",
        type=int,
        default=BATCH_IMAGES,
        help="most images in one collected inference call (default: %(default)s)",
    )
    parser.add_argument(
        "--max-upload-bytes",
        type=int,
        default=MAX_UPLOAD_BYTES,
        help="larger bodies get 413 (default: %(default)s)",
    )
    parser.add_argument(
        "--body-timeout",
        type=float,
        default=BODY_TIMEOUT,
        help="seconds for a whole request body to arrive; a stalled client gets 408 "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--keep-alive-timeout",
        type=int,
        default=KEEP_ALIVE_TIMEOUT,
        help="seconds an idle keep-alive connection stays open (default: %(default)s)",
    )
    parser.add_argument(
        "--max-concurrency",
        type=int,
        default=MAX_CONCURRENCY,
        help="connections (and requests) served at once; beyond them the answer is 503 "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes sharing the port, each with its own copy of the model and its "
        "own SO_REUSEPORT socket (Linux spreads connections over them); one process runs its "
        "Python on one core at a time, so give it about one per core the service may use "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--docs", action="store_true", help="serve /docs, /redoc and /openapi.json (off by default)"
    )
    security = parser.add_argument_group("security")
    security.add_argument(
        "--key-file",
        type=Path,
        help="the key of an encrypted package (python -m dlbook.vault); default: "
        f"${vault.KEY_ENV}, when the package is encrypted",
    )
    security.add_argument(
        "--api-keys",
        type=Path,
        help="keys file (python -m dlbook.access add): every request needs "
        "'Authorization: Bearer <key>'; without one, GET /health answers only its status",
    )
    security.add_argument(
        "--rate-limit",
        metavar="N/s",
        help="requests per key (per client address without --api-keys), as N/s, N/min or N/h; "
        "beyond it 429 with Retry-After (each worker process counts its own)",
    )
    security.add_argument(
        "--burst", type=int, help="requests a key may make at once (default: the rate per second)"
    )
    security.add_argument("--ssl-certfile", type=Path, help="serve HTTPS with this certificate")
    security.add_argument(
        "--ssl-keyfile", type=Path, help="the certificate's private key (if not in the certfile)"
    )
    security.add_argument(
        "--insecure-public",
        action="store_true",
        help="allow a non-loopback --host without --api-keys: anyone who reaches it may use it",
    )
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error("--port must be 0-65535")
    for flag in (
        "threads",
        "max_upload_bytes",
        "keep_alive_timeout",
        "max_concurrency",
        "max_batch",
        "workers",
    ):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be at least 1")
    if not (math.isfinite(args.body_timeout) and args.body_timeout > 0):
        parser.error("--body-timeout must be a positive number of seconds")
    if not (math.isfinite(args.batch_window_ms) and 0 <= args.batch_window_ms <= 1000):
        parser.error("--batch-window-ms must be 0 (off) to 1000")
    rate = _check_security(parser, args)
    torch.set_num_threads(args.threads)
    options = {
        "model_dir": str(args.model),
        "max_upload_bytes": args.max_upload_bytes,
        "body_timeout": args.body_timeout,
        "docs": args.docs,
        "backend": args.backend,
        "threads": args.threads,
        "batch_window_ms": args.batch_window_ms,
        "max_batch": args.max_batch,
        # paths only: each worker reads the keys itself, and no key is on a command line
        "key_file": args.key_file and str(args.key_file),
        "api_keys": args.api_keys and str(args.api_keys),
        "rate_limit": rate,
        "burst": args.burst,
    }
    access.configure_log()
    try:  # with several workers this checks the package (and caches the export) before they start
        app = app_from_options(options)
    except CheckpointError as err:
        print(f"error: cannot load the model from {args.model}: {err}", file=sys.stderr)
        return 2
    except BackendError as err:
        print(f"error: cannot serve with --backend {args.backend}: {err}", file=sys.stderr)
        return 2
    workers = f", {args.workers} worker processes" if args.workers > 1 else ""
    print(f"serving {args.model} with {app.state.backend_note}{workers}", file=sys.stderr)
    import uvicorn

    settings: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "log_level": "warning",
        "timeout_keep_alive": args.keep_alive_timeout,
        # uvicorn counts the connection asking too: its limit N serves N - 1 at once
        "limit_concurrency": args.max_concurrency + 1,
        "access_log": False,  # dlbook.access logs each request, with its key id
        "ssl_certfile": args.ssl_certfile and str(args.ssl_certfile),
        "ssl_keyfile": args.ssl_keyfile and str(args.ssl_keyfile),
    }
    if args.workers == 1:
        uvicorn.run(app, **settings)
        return 0
    del app  # each worker process builds its own from the same options
    if workers_module.BALANCED:  # one SO_REUSEPORT socket per worker: the kernel spreads clients
        return workers_module.run_workers(
            functools.partial(app_from_options, options), settings, args.workers
        )
    os.environ[WORKER_OPTIONS_ENV] = json.dumps(options)  # elsewhere: uvicorn's own workers
    uvicorn.run(f"{__name__}:app_from_env", factory=True, workers=args.workers, **settings)
    return 0


WORKER_OPTIONS_ENV = "DLBOOK_SERVE_OPTIONS"


def app_from_options(options: dict) -> FastAPI:
    """One worker process's app, built from `main`'s options (a JSON-able dict)."""
    access.configure_log()
    paths = {k: Path(options[k]) for k in ("model_dir", "key_file", "api_keys") if options.get(k)}
    return create_app(**{**options, **paths})


def is_loopback(host: str) -> bool:
    """Whether every address `host` names is a loopback one (127.0.0.0/8, ::1)."""
    try:
        infos = socket.getaddrinfo(host.strip("[]"), None)
    except (OSError, UnicodeError):  # unknown name: not known to be loopback
        return False
    addresses = {str(info[4][0]).split("%")[0] for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(a).is_loopback for a in addresses)


def _check_security(parser: argparse.ArgumentParser, args: argparse.Namespace) -> float | None:
    """Refuse unusable security options (one line, exit 2); return the rate limit per second."""
    try:
        rate = access.parse_rate(args.rate_limit) if args.rate_limit is not None else None
        if args.api_keys is not None:
            access.KeyStore.load(args.api_keys)
        vault.package_key(args.model, args.key_file)
    except (access.AccessError, vault.VaultError) as err:
        parser.error(str(err))
    if args.burst is not None and (args.burst < 1 or rate is None):
        parser.error("--burst must be at least 1, with --rate-limit")
    if args.ssl_keyfile is not None and args.ssl_certfile is None:
        parser.error("--ssl-keyfile needs --ssl-certfile")
    if args.ssl_certfile is not None:
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(
                args.ssl_certfile, args.ssl_keyfile
            )
        except (OSError, ssl.SSLError) as err:
            parser.error(f"--ssl-certfile/--ssl-keyfile: cannot load them ({err})")
    public = not is_loopback(args.host)
    if public and args.api_keys is None and not args.insecure_public:
        parser.error(
            f"--host {args.host} is reachable from other machines: give --api-keys (and "
            "--ssl-certfile), or --insecure-public to serve anyone who can reach it"
        )
    if public and args.api_keys is not None and args.ssl_certfile is None:
        print(
            "warning: API keys will cross the network in clear text: add --ssl-certfile",
            file=sys.stderr,
        )
    return rate


def app_from_env() -> FastAPI:
    """One uvicorn worker's app, built from the options `main` left in the environment."""
    return app_from_options(json.loads(os.environ[WORKER_OPTIONS_ENV]))


if __name__ == "__main__":
    sys.exit(main())
