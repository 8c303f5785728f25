"""The HTTP service, tested as a client sees it: a real `python -m dlbook.serve` on loopback."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

import dlbook as dl
from dlbook import serve
from dlbook.package import card_digest, load_package, model_card, save_package
from dlbook.preprocess import digit_to_png, image_to_input

UPLOAD_LIMIT = 2_000_000


@pytest.fixture(scope="module")
def package(tmp_path_factory, mnist):
    """A real (quickly trained) MLP packaged with its card."""
    recipe = dl.Recipe("mlp", {"hidden": 64}, num_epochs=1, batch_size=128)
    trained = dl.train_recipe(recipe, mnist)
    _, acc = dl.evaluate_tensors(trained.model, mnist.X_test, mnist.y_test)
    folder = tmp_path_factory.mktemp("pkg")
    save_package(
        folder, trained.model, model_card(trained.model, recipe, {"test_acc": acc}, "0.1.0")
    )
    return folder


@pytest.fixture(scope="module")
def server(package):
    """The service started as a user would (`python -m dlbook.serve`), once /health answers."""
    with serve.running_server(package, max_upload_bytes=UPLOAD_LIMIT) as url:
        yield url


@pytest.fixture(scope="module")
def strict_server(package):
    """The service with short limits: 1 s for a body, 1 s idle keep-alive, 2 connections."""
    limits = dict(body_timeout=1.0, keep_alive_timeout=1, max_concurrency=2)
    with serve.running_server(package, **limits) as url:
        yield url


def pixels_of(mnist, i: int) -> np.ndarray:
    """Test image i as (28, 28) white-on-black pixels in [0, 1]."""
    return dl.denormalize(mnist.X_test[i, 0]).numpy()


def test_health(server, package):
    body = httpx.get(f"{server}/health").json()
    _, card = load_package(package)
    assert body["status"] == "ok" and body["model_version"].startswith("dlbook-mnist-mlp:0.1.0+")
    assert body["model_version"].endswith(card["sha256"][:12])
    assert body["backend"] == "onnx"  # the default
    cache = list((package.parent / ".onnx-cache").glob("*.onnx"))  # exported once, beside it
    assert len(cache) == 1 and cache[0].with_name(cache[0].name + ".sha256").exists()


def test_predict_json_has_label_probabilities_version_latency(server, mnist):
    r = httpx.post(f"{server}/predict", json={"pixels": pixels_of(mnist, 0).tolist()})
    assert r.status_code == 200
    body = r.json()
    assert body["label"] == int(np.argmax(body["probabilities"]))
    assert len(body["probabilities"]) == 10 and abs(sum(body["probabilities"]) - 1) < 1e-5
    assert body["model_version"].startswith("dlbook-mnist-mlp") and body["latency_ms"] >= 0


def test_http_equals_in_process_for_100_test_images(server, package, mnist):
    model, _ = load_package(package)
    X = dl.preprocess.normalize_pixels(np.stack([pixels_of(mnist, i) for i in range(100)]))
    with torch.inference_mode():
        expected = torch.softmax(model(X), 1)
    with httpx.Client(base_url=server) as client:
        for i in range(100):
            got = client.post("/predict", json={"pixels": pixels_of(mnist, i).tolist()}).json()
            assert got["label"] == expected[i].argmax().item()
            np.testing.assert_allclose(got["probabilities"], expected[i].numpy(), atol=1e-6)
    batch = httpx.post(
        f"{server}/predict/batch",
        json={"images": [pixels_of(mnist, i).tolist() for i in range(100)]},
    ).json()
    assert [p["label"] for p in batch["predictions"]] == expected.argmax(1).tolist()


@pytest.mark.parametrize("size, dark_on_light", [(28, False), (280, True), (97, True)])
def test_png_upload_any_size_and_polarity(server, package, mnist, size, dark_on_light):
    png = digit_to_png(pixels_of(mnist, 0), size=size, dark_on_light=dark_on_light)
    model, _ = load_package(package)
    expected = model(image_to_input(png)).argmax().item()
    raw = httpx.post(f"{server}/predict", content=png, headers={"content-type": "image/png"})
    form = httpx.post(f"{server}/predict", files={"file": ("digit.png", png, "image/png")})
    assert raw.status_code == form.status_code == 200
    assert raw.json()["label"] == form.json()["label"] == expected


def test_jpeg_upload(server, mnist):
    img = Image.open(io.BytesIO(digit_to_png(pixels_of(mnist, 1), size=140, dark_on_light=True)))
    out = io.BytesIO()
    img.convert("RGB").save(out, format="JPEG", quality=90)
    r = httpx.post(
        f"{server}/predict", content=out.getvalue(), headers={"content-type": "image/jpeg"}
    )
    assert r.status_code == 200 and r.json()["label"] == int(mnist.y_test[1])


def test_batch_of_uploaded_files(server, mnist):
    files = [
        ("files", (f"{i}.png", digit_to_png(pixels_of(mnist, i)), "image/png")) for i in range(3)
    ]
    r = httpx.post(f"{server}/predict/batch", files=files)
    assert r.status_code == 200 and len(r.json()["predictions"]) == 3


def _post(server, path="/predict", **kwargs):
    return httpx.post(f"{server}{path}", **kwargs)


def _png(mnist) -> bytes:
    return digit_to_png(pixels_of(mnist, 0), size=64)


BAD = {
    "not an image": (
        lambda m: dict(content=b"GIF89a not really", headers={"content-type": "image/png"}),
        400,
        "not a PNG or JPEG",
    ),
    "empty body": (
        lambda m: dict(content=b"", headers={"content-type": "image/png"}),
        400,
        "empty",
    ),
    "truncated PNG": (
        lambda m: dict(content=_png(m)[:120], headers={"content-type": "image/png"}),
        400,
        "could not be decoded",
    ),
    "wrong JSON shape": (
        lambda m: dict(json={"pixels": [[0.0] * 28] * 27}),
        422,
        "shape 28x28; got 27x28",
    ),
    "JSON without pixels": (lambda m: dict(json={"image": 1}), 422, "'pixels' field"),
    "invalid JSON": (
        lambda m: dict(content=b"{nope", headers={"content-type": "application/json"}),
        400,
        "not valid JSON",
    ),
    "NaN values": (
        lambda m: dict(
            content=json.dumps({"pixels": [[float("nan")] * 28] * 28}),
            headers={"content-type": "application/json"},
        ),
        422,
        "NaN",
    ),
    "out of range": (lambda m: dict(json={"pixels": [[255] * 28] * 28}), 422, "must lie in [0, 1]"),
    "over the size limit": (
        lambda m: dict(
            content=b"\x89PNG" + bytes(UPLOAD_LIMIT), headers={"content-type": "image/png"}
        ),
        413,
        "exceeds the limit",
    ),
    "unsupported media type": (
        lambda m: dict(content=b"7", headers={"content-type": "text/plain"}),
        415,
        "unsupported media type 'text/plain'",
    ),
    "no content type": (lambda m: dict(content=b"7"), 415, "unsupported media type"),
    "blank image": (
        lambda m: dict(
            content=digit_to_png(np.zeros((28, 28))), headers={"content-type": "image/png"}
        ),
        422,
        "no digit",
    ),
    "form without file": (
        lambda m: dict(data={"file": "7"}, files={"x": ("x.txt", b"1", "text/plain")}),
        400,
        "no 'file' upload",
    ),
    "GIF in a form": (
        lambda m: dict(files={"file": ("x.gif", b"GIF89a", "image/gif")}),
        415,
        "unsupported upload type 'image/gif'",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_a_clear_4xx(server, mnist, case):
    make, status, words = BAD[case]
    r = _post(server, **make(mnist))
    assert r.status_code == status, r.text
    assert words in r.json()["error"] and r.json()["status"] == status


@pytest.mark.parametrize(
    "payload, words",
    [
        ({"images": []}, "list of 1 to 256"),
        ({"images": [[[0.5] * 28] * 28] * 257}, "list of 1 to 256"),
        ({"images": [[[0.5] * 28] * 28, [[0.5] * 3]]}, "images[1] must have shape 28x28"),
    ],
)
def test_bad_batches(server, payload, words):
    r = _post(server, "/predict/batch", json=payload)
    assert r.status_code == 422 and words in r.json()["error"]


def test_refuses_a_model_folder_that_is_not_a_package(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "dlbook.serve", "--model", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "cannot load the model" in r.stderr


def _with_normalization(package, folder, normalization):
    """A copy of the package whose card declares other input normalization constants."""
    altered = shutil.copytree(package, folder)
    record = json.loads((altered / "model.json").read_text())
    record["meta"]["input"]["normalization"] = normalization
    record["meta"]["card_sha256"] = card_digest(record["meta"])  # a card saved that way
    (altered / "model.json").write_text(json.dumps(record))
    return altered


def test_applies_the_normalization_its_card_declares(package, tmp_path, mnist):
    # The contract changed: a card that declares other constants is served with them (it was
    # refused); the service has no normalization of its own.
    altered = _with_normalization(package, tmp_path / "pkg", {"mean": 0.5, "std": 0.25})
    model, _ = load_package(altered)
    pixels = np.stack([pixels_of(mnist, i) for i in range(8)])
    with torch.inference_mode():
        expected = torch.softmax(model(dl.preprocess.normalize_pixels(pixels, 0.5, 0.25)), 1)
    with serve.running_server(altered) as url:
        got = httpx.post(f"{url}/predict/batch", json={"images": pixels.tolist()}).json()
    probs = np.array([p["probabilities"] for p in got["predictions"]])
    np.testing.assert_allclose(probs, expected.numpy(), atol=1e-6)
    with pytest.raises(httpx.TransportError):  # the block's end stopped the server
        httpx.get(f"{url}/health", timeout=2)


@pytest.mark.parametrize("normalization", [{"mean": 0.5, "std": 0}, {"mean": 0.5}, None])
def test_refuses_a_card_without_usable_normalization(package, tmp_path, normalization):
    altered = _with_normalization(package, tmp_path / "pkg", normalization)
    # The contract moved: the schema refuses these cards on load (it was a check in serve).
    refused = pytest.raises(
        RuntimeError, match="(?s)exited with status 2.*cannot load the model.*normalization"
    )
    with refused, serve.running_server(altered):
        pass


@pytest.fixture(scope="module")
def documented_server(package):
    with serve.running_server(package, docs=True) as url:
        yield url


def test_openapi_documents_the_request_and_response_bodies(documented_server):
    # The contract changed: /openapi.json is served only with --docs (it was public).
    spec = httpx.get(f"{documented_server}/openapi.json").json()
    one = spec["paths"]["/predict"]["post"]
    content = one["requestBody"]["content"]
    assert {"application/json", "multipart/form-data", "image/png", "image/jpeg"} <= set(content)
    pixels = content["application/json"]["schema"]
    assert pixels["title"] == "PixelsRequest" and pixels["required"] == ["pixels"]
    rows = pixels["properties"]["pixels"]
    assert rows["minItems"] == rows["maxItems"] == 28
    assert rows["items"]["items"] == {"type": "number", "minimum": 0, "maximum": 1}
    batch = spec["paths"]["/predict/batch"]["post"]["requestBody"]["content"]
    assert set(batch) == {"application/json", "multipart/form-data"}
    images = batch["application/json"]["schema"]["properties"]["images"]
    assert images["minItems"] == 1 and images["maxItems"] == serve.MAX_BATCH
    assert set(spec["components"]["schemas"]) >= {"PredictResponse", "ErrorResponse", "Health"}
    assert one["responses"]["415"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorResponse"
    }


def test_bounded_concurrent_load(server, mnist):
    """1,000 requests, 16 at a time, against loopback only: zero errors; report p50 and p99."""
    payload = {"pixels": pixels_of(mnist, 3).tolist()}

    def one(_: int) -> tuple[int, float]:
        tic = time.perf_counter()
        status = client.post("/predict", json=payload, timeout=30).status_code
        return status, time.perf_counter() - tic

    limits = httpx.Limits(max_connections=16)
    with httpx.Client(base_url=server, limits=limits) as client, ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(1000)))
    statuses = [s for s, _ in results]
    latencies = sorted(t for _, t in results)
    p50, p99 = statistics.median(latencies), latencies[int(0.99 * len(latencies)) - 1]
    print(
        f"\nload test: 1000 requests, 16 concurrent: p50 {1e3 * p50:.1f} ms, p99 {1e3 * p99:.1f} ms"
    )
    assert statuses.count(200) == 1000


PATHOLOGICAL_JSON = {
    "deep nesting": (b"[" * 100_000 + b"]" * 100_000, 400, "nested too deeply"),
    "deep nesting in a field": (b'{"pixels":' + b"[" * 5000 + b"]" * 5000 + b"}", 400, "nested"),
    "moderate nesting": (b'{"pixels":' + b"[" * 500 + b"]" * 500 + b"}", 400, "nested"),
    "a 5,000-digit integer": (b'{"pixels": ' + b"9" * 5000 + b"}", 400, "too many digits"),
    "integers beyond float": (
        json.dumps({"pixels": [[10**400] * 28] * 28}).encode(),
        422,
        "array of numbers",
    ),
    "a lone surrogate": (b'{"pixels": "\\ud800"}', 422, "28x28"),
    "a JSON array": (b"[1, 2, 3]", 422, "an object with a 'pixels' field"),
}


@pytest.mark.parametrize("case", list(PATHOLOGICAL_JSON))
@pytest.mark.parametrize("path", ["/predict", "/predict/batch"])
def test_pathological_json_is_a_4xx_and_the_connection_lives_on(server, case, path):
    body, status, words = PATHOLOGICAL_JSON[case]
    with httpx.Client(base_url=server, timeout=30) as client:
        r = client.post(path, content=body, headers={"content-type": "application/json"})
        assert r.status_code == status, r.text
        assert r.json()["status"] == status and isinstance(r.json()["error"], str)
        if path == "/predict" or status == 400:  # the batch endpoint names its own field
            assert words in r.json()["error"]
        assert client.get("/health").status_code == 200  # the same connection still works


def test_unexpected_error_is_a_json_500_that_closes_the_connection(package, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(serve.create_app(package), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:
            return await client.post("/predict", json={"pixels": [[0.5] * 28] * 28})

    monkeypatch.setattr(serve, "normalize_pixels", broken)  # a bug in the service
    r = asyncio.run(post())
    assert r.status_code == 500 and r.headers["connection"] == "close"
    assert r.json() == {"error": "internal server error", "status": 500}


def test_docs_are_off_unless_asked_for(server, documented_server):
    for path in ("/docs", "/redoc", "/openapi.json"):
        r = httpx.get(f"{server}{path}")
        assert r.status_code == 404 and r.json() == {"error": "Not Found", "status": 404}
        assert httpx.get(f"{documented_server}{path}").status_code == 200


def _stalled(url: str, sent: bytes = b"") -> socket.socket:
    """A connection that declares a 1,000-byte PNG body and sends only `sent` of it."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    head = "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 1000"
    sock.sendall(head.encode() + b"\r\n\r\n" + sent)
    return sock


def _read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


@pytest.mark.parametrize("sent", [b"", b"\x89PNG\r\n"], ids=["no-body", "part-of-a-body"])
def test_stalled_body_is_cut_off_with_408(strict_server, sent):
    tic = time.perf_counter()
    with _stalled(strict_server, sent) as sock:
        reply = _read_all(sock)  # returns: the server closed the connection
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408") and b"connection: close" in head.lower()
    assert json.loads(body)["error"].startswith("the request body did not arrive within 1 s")
    assert time.perf_counter() - tic < 5


def test_idle_keep_alive_connection_is_closed(strict_server):
    host, port = strict_server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        tic = time.perf_counter()
        reply = _read_all(sock)  # the answer, then the close after 1 s idle
    assert reply.startswith(b"HTTP/1.1 200") and time.perf_counter() - tic < 5


def test_concurrency_limit_answers_503(strict_server):
    with _stalled(strict_server) as first, _stalled(strict_server) as second:
        time.sleep(0.3)  # both requests are in the server, waiting for their bodies
        r = httpx.get(f"{strict_server}/health")
        assert r.status_code == 503 and r.headers["connection"] == "close"
        assert _read_all(first).startswith(b"HTTP/1.1 408")
        assert _read_all(second).startswith(b"HTTP/1.1 408")
    assert httpx.get(f"{strict_server}/health").status_code == 200


def test_help_documents_the_limits(capsys):
    with pytest.raises(SystemExit) as info:
        serve.main(["--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0
    flags = ("--body-timeout", "--keep-alive-timeout", "--max-concurrency", "--docs")
    flags += ("--backend", "--threads", "--batch-window-ms", "--max-batch", "--workers")
    for flag in flags:
        assert flag in out
    with pytest.raises(SystemExit) as info:
        serve.main(["--model", "x", "--workers", "0"])
    assert info.value.code == 2 and "--workers must be at least 1" in capsys.readouterr().err


def _large_png() -> bytes:
    """A 4000x4000 PNG of a stroke: small to send, about a second to decode and prepare."""
    img = np.zeros((4000, 4000), dtype=np.uint8)
    img[800:3200, 1800:2200] = 255
    out = io.BytesIO()
    Image.fromarray(img).save(out, format="PNG")
    return out.getvalue()


def test_decoding_does_not_block_health(server):
    png = _large_png()

    def upload(_: int) -> int:
        headers = {"content-type": "image/png"}
        return httpx.post(f"{server}/predict", content=png, headers=headers, timeout=60).status_code

    with httpx.Client(base_url=server) as client, ThreadPoolExecutor(4) as pool:
        uploads = [pool.submit(upload, i) for i in range(4)]
        time.sleep(0.2)  # the uploads are being decoded
        health_s = []
        while not all(u.done() for u in uploads) or not health_s:
            tic = time.perf_counter()
            assert client.get("/health").status_code == 200
            health_s.append(time.perf_counter() - tic)
            time.sleep(0.05)
        assert [u.result() for u in uploads] == [200] * 4
    assert max(health_s) < 0.5, f"/health took {max(health_s):.2f} s during the uploads"


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_canvas_drawing_black_on_transparent(server, package, mnist, mode):
    pixels = pixels_of(mnist, 0)  # (28, 28) ink in [0, 1]
    ink = np.asarray(Image.fromarray((pixels * 255).astype(np.uint8)).resize((280, 280)))
    black = np.zeros_like(ink)
    layers = [black, ink] if mode == "LA" else [black, black, black, ink]  # ink in alpha
    out = io.BytesIO()
    Image.fromarray(np.stack(layers, axis=-1)).save(out, format="PNG")
    model, _ = load_package(package)
    expected = model(image_to_input(digit_to_png(pixels, size=280))).argmax().item()
    r = _post(server, content=out.getvalue(), headers={"content-type": "image/png"})
    assert r.status_code == 200, r.text
    assert r.json()["label"] == expected == int(mnist.y_test[0])


def _resigned(package, folder, edit):
    """A copy of the package whose card `edit` changed, signed again (bad code wrote it)."""
    altered = shutil.copytree(package, folder)
    record = json.loads((altered / "model.json").read_text())
    record["meta"] = edit(record["meta"])
    if isinstance(record["meta"], dict):
        record["meta"]["card_sha256"] = card_digest(record["meta"])
    (altered / "model.json").write_text(json.dumps(record))
    return altered


def _arch(**changes):
    def edit(card):
        card["architecture"].update(changes)
        return card

    return edit


@pytest.mark.parametrize(
    "edit, words",
    [
        (_arch(model="resnet"), "unknown model 'resnet'"),
        (_arch(model_kwargs={"hiden": 64}), "no keyword 'hiden'"),
        (_arch(model_kwargs={"hidden": -64}), "at least 1"),
        (lambda card: [card], "must be a JSON object"),
        (lambda card: {k: v for k, v in card.items() if k != "metrics"}, "metrics: Field"),
        (lambda card: {**card, "version": "2.0.0"}, None),  # tampered: not signed again
    ],
    ids=[
        "unknown-architecture",
        "wrong-keyword",
        "negative-size",
        "array",
        "no-metrics",
        "tampered",
    ],
)
def test_malformed_card_exits_2_with_one_line(package, tmp_path, capsys, edit, words):
    if words is None:
        folder = shutil.copytree(package, tmp_path / "pkg")
        record = json.loads((folder / "model.json").read_text())
        record["meta"] = edit(record["meta"])
        (folder / "model.json").write_text(json.dumps(record))
        words = "does not match its digest"
    else:
        folder = _resigned(package, tmp_path / "pkg", edit)
    assert serve.main(["--model", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot load the model") and words in err
    assert err.count("\n") == 1 and "Traceback" not in err


def _expected_probs(package, mnist, n: int) -> np.ndarray:
    """Eager PyTorch's probabilities (n, 10) for the first n test images, in process."""
    model, _ = load_package(package)
    X = dl.preprocess.normalize_pixels(np.stack([pixels_of(mnist, i) for i in range(n)]))
    with torch.inference_mode():
        return torch.softmax(model(X), 1).numpy()


def _predict_concurrently(url: str, mnist, n: int) -> list[dict]:
    """Test images 0..n-1 posted to /predict by 16 clients at once; the answers in order."""
    with httpx.Client(base_url=url, timeout=30) as client, ThreadPoolExecutor(16) as pool:
        return list(
            pool.map(
                lambda i: (
                    client.post("/predict", json={"pixels": pixels_of(mnist, i).tolist()})
                    .raise_for_status()
                    .json()
                ),
                range(n),
            )
        )


def test_eager_backend_is_selectable_and_answers_alike(package, mnist):
    expected = _expected_probs(package, mnist, 20)
    with serve.running_server(package, backend="eager") as url:
        assert httpx.get(f"{url}/health").json()["backend"] == "eager"
        got = _predict_concurrently(url, mnist, 20)
    np.testing.assert_allclose([g["probabilities"] for g in got], expected, atol=1e-6)


def test_several_worker_processes_answer_alike(package, mnist):
    expected = _expected_probs(package, mnist, 24)
    with serve.running_server(package, workers=2) as url:
        assert httpx.get(f"{url}/health").json()["backend"] == "onnx"
        got = _predict_concurrently(url, mnist, 24)
    np.testing.assert_allclose([g["probabilities"] for g in got], expected, atol=1e-6)


def test_batching_routes_each_answer_to_its_request(package, mnist):
    expected = _expected_probs(package, mnist, 48)
    with serve.running_server(package, batch_window_ms=20, max_batch=8) as url:
        got = _predict_concurrently(url, mnist, 48)
        images = [pixels_of(mnist, i).tolist() for i in range(20)]  # over max_batch: alone
        batch = httpx.post(f"{url}/predict/batch", json={"images": images}).json()
    np.testing.assert_allclose([g["probabilities"] for g in got], expected, atol=1e-6)
    assert [g["label"] for g in got] == expected.argmax(1).tolist()
    batch_probs = [p["probabilities"] for p in batch["predictions"]]
    np.testing.assert_allclose(batch_probs, expected[:20], atol=1e-6)


def _batched(window_ms: float, max_batch: int, sizes: list[int], fail: bool = False):
    """Run one Batcher call per size at once; (the sizes of the inference calls, answers)."""
    calls: list[int] = []

    def infer(X: torch.Tensor) -> tuple[np.ndarray, float]:
        if fail:
            raise RuntimeError("a bug")
        calls.append(len(X))
        return X.reshape(len(X), -1)[:, :10].numpy(), 1.0  # each image's own first pixels

    batcher = serve.Batcher(infer, window_ms, max_batch)
    inputs = [torch.full((n, 1, 28, 28), float(i)) for i, n in enumerate(sizes)]

    async def all_at_once() -> list:
        return await asyncio.gather(*(batcher(X) for X in inputs), return_exceptions=True)

    return calls, inputs, asyncio.run(all_at_once())


def test_batcher_collects_concurrent_requests_up_to_max_batch():
    calls, inputs, answers = _batched(window_ms=50, max_batch=4, sizes=[1, 2, 1, 1, 3, 9, 1])
    assert sorted(calls) == [1, 4, 4, 9]  # in order: [1, 2, 1], [1, 3], [1]; the 9 alone
    for X, (probs, ms) in zip(inputs, answers):
        assert probs.shape == (len(X), 10) and np.all(probs == X[0, 0, 0, 0].item())
        assert ms == 1.0


def test_batcher_hands_an_inference_error_to_every_request():
    _, _, answers = _batched(window_ms=10, max_batch=8, sizes=[1, 1, 2], fail=True)
    assert all(isinstance(a, RuntimeError) for a in answers)


def test_refuses_to_start_when_onnx_runtime_disagrees_with_eager(package, monkeypatch, capsys):
    monkeypatch.setattr(serve, "VERIFY_ATOL", -1.0)  # no difference can pass
    assert serve.main(["--model", str(package), "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "ONNX Runtime disagrees with eager PyTorch" in err and "--backend eager" in err
    assert len(err.splitlines()) == 1


def test_onnx_is_exported_to_a_temporary_folder_where_the_cache_cannot_be_written(
    package, tmp_path
):
    model, _ = load_package(package)
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    X = serve._verification_batch(0.1307, 0.3081)
    run, note = serve.onnx_runner(model, "key", blocked / "cache", X, threads=1)
    assert "temporary folder" in note and "0 of 32 labels differ" in note
    with torch.inference_mode():
        np.testing.assert_allclose(run(X), model(X).numpy(), atol=serve.VERIFY_ATOL)
