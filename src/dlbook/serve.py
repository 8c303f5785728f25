"""An HTTP inference service for a packaged MNIST model (FastAPI on uvicorn).

python -m dlbook.serve --model <folder> [--host 127.0.0.1] [--port 8000]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from .checkpoint import CheckpointError
from .data import MNIST_MEAN, MNIST_STD
from .package import load_package
from .preprocess import InputError, NoDigitError, check_array, image_to_input, normalize_pixels

MAX_UPLOAD_BYTES = 8 * 1024 * 1024  # 8 MiB: a phone photo, or a full batch of JSON pixels
MAX_BATCH = 256
IMAGE_TYPES = ("image/png", "image/jpeg")


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


def _json(body: bytes) -> object:
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RequestError(400, f"the body is not valid JSON ({err})") from None


async def _inputs(request: Request, limit: int, batch: bool) -> torch.Tensor:
    """Parse an image upload, a raw image body or JSON pixels into (N, 1, 28, 28)."""
    kind = _media_type(request)
    if kind == "multipart/form-data":
        request._body = await _read_body(request, limit)  # size-checked; form() reuses it
        try:
            form = await request.form()
        except Exception as err:  # malformed multipart data
            raise RequestError(400, f"the multipart form could not be parsed ({err})") from None
        files = form.getlist("files" if batch else "file") or form.getlist("file")
        if not files or not all(hasattr(f, "read") for f in files):
            raise RequestError(400, f"the form has no '{'files' if batch else 'file'}' upload")
        return torch.cat([_image(await f.read(), f.content_type) for f in files[: MAX_BATCH + 1]])
    body = await _read_body(request, limit)
    if kind in IMAGE_TYPES and not batch:
        return _image(body, kind)
    if kind == "application/json":
        data = _json(body)
        key = "images" if batch else "pixels"
        if not isinstance(data, dict) or key not in data:
            raise RequestError(422, f"the JSON must be an object with a '{key}' field")
        return _pixels(data[key], batch)
    expected = "application/json or multipart/form-data" + (
        "" if batch else ", image/png, image/jpeg"
    )
    raise RequestError(415, f"unsupported media type {kind or 'none'!r}; send {expected}")


def _image(data: bytes, kind: str | None) -> torch.Tensor:
    if kind and kind not in IMAGE_TYPES + ("application/octet-stream",):
        raise RequestError(415, f"unsupported upload type {kind!r}; send a PNG or JPEG")
    try:
        return image_to_input(data)
    except NoDigitError as err:  # a valid image with nothing to classify
        raise RequestError(422, str(err)) from None
    except InputError as err:  # not decodable as a PNG or JPEG
        raise RequestError(400, str(err)) from None


def _pixels(values: object, batch: bool) -> torch.Tensor:
    try:
        if not batch:
            return normalize_pixels(check_array(values))
        if not isinstance(values, list) or not 1 <= len(values) <= MAX_BATCH:
            raise InputError(f"images must be a list of 1 to {MAX_BATCH} arrays of 28x28")
        return normalize_pixels(
            np.stack([check_array(v, f"images[{i}]") for i, v in enumerate(values)])
        )
    except InputError as err:
        raise RequestError(422, str(err)) from None


def create_app(model_dir: Path, max_upload_bytes: int = MAX_UPLOAD_BYTES) -> FastAPI:
    """The service: GET /health, POST /predict, POST /predict/batch."""
    model, card = load_package(model_dir)
    applied = {"mean": MNIST_MEAN, "std": MNIST_STD}  # what preprocess.normalize_pixels does
    if card["input"]["normalization"] != applied:
        raise CheckpointError(
            f"the model expects inputs normalized with "
            f"{card['input']['normalization']}; this service applies {applied}"
        )
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
    def health() -> dict:
        return {
            "status": "ok",
            "model_version": version,
            "architecture": card["architecture"],
            "test_accuracy": card["metrics"].get("test_acc"),
        }

    @app.post("/predict")
    async def predict(request: Request) -> dict:
        X = await _inputs(request, max_upload_bytes, batch=False)
        if len(X) != 1:
            raise RequestError(422, "/predict takes one image; use /predict/batch for several")
        tic = time.perf_counter()
        labels, probs = await run_in_threadpool(infer, X)
        return {
            "label": labels[0],
            "probabilities": probs[0],
            "model_version": version,
            "latency_ms": round(1e3 * (time.perf_counter() - tic), 3),
        }

    @app.post("/predict/batch")
    async def predict_batch(request: Request) -> dict:
        X = await _inputs(request, max_upload_bytes, batch=True)
        if len(X) > MAX_BATCH:
            raise RequestError(422, f"at most {MAX_BATCH} images per batch")
        tic = time.perf_counter()
        labels, probs = await run_in_threadpool(infer, X)
        return {
            "predictions": [{"label": l, "probabilities": p} for l, p in zip(labels, probs)],
            "model_version": version,
            "latency_ms": round(1e3 * (time.perf_counter() - tic), 3),
        }

    return app


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, load the model and serve until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m dlbook.serve", description=__doc__.split("\n")[0]
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
