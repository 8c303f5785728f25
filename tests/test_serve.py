"""The HTTP service, tested as a client sees it: a real `python -m dlbook.serve` on loopback."""

from __future__ import annotations

import io
import json
import shutil
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
from dlbook.package import load_package, model_card, save_package
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


def pixels_of(mnist, i: int) -> np.ndarray:
    """Test image i as (28, 28) white-on-black pixels in [0, 1]."""
    return dl.denormalize(mnist.X_test[i, 0]).numpy()


def test_health(server, package):
    body = httpx.get(f"{server}/health").json()
    _, card = load_package(package)
    assert body["status"] == "ok" and body["model_version"].startswith("dlbook-mnist-mlp:0.1.0+")
    assert body["model_version"].endswith(card["sha256"][:12])


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
    refused = pytest.raises(RuntimeError, match="(?s)exited with status 2.*cannot load the model")
    with refused, serve.running_server(altered):
        pass


def test_openapi_documents_the_request_and_response_bodies(server):
    spec = httpx.get(f"{server}/openapi.json").json()
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
