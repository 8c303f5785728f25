"""Property-based fuzzing of the HTTP service: whatever a client sends, a clean answer.

Whatever the path, body, content type and headers, the service answers within a time bound
with a 2xx, or a 4xx whose JSON body names the problem; it never answers 5xx and stays up.
"""

from __future__ import annotations

import io
import json
import time

import httpx
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import dlbook as dl
from dlbook import serve
from dlbook.package import model_card, save_package
from dlbook.preprocess import digit_to_png

TIME_BOUND_S = 5.0  # per request; the module's server answers in milliseconds
PATHS = ["/predict", "/predict/batch", "/health"]
MEDIA_TYPES = [
    "application/json",
    "multipart/form-data",
    "multipart/form-data; boundary=x",
    "image/png",
    "image/jpeg",
    "text/plain",
    "application/octet-stream",
    "",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The service on an untrained MLP: the answers' shape, not their accuracy, is tested."""
    torch.manual_seed(0)
    model = dl.MLP(hidden=16)
    card = model_card(model, dl.Recipe("mlp", {"hidden": 16}), {"test_acc": None}, "0.0.1")
    folder = save_package(tmp_path_factory.mktemp("fuzz") / "pkg", model, card)
    with serve.running_server(folder, max_upload_bytes=200_000, body_timeout=2.0) as url:
        yield url


def _png(mode: str, size: int, seed: int) -> bytes:
    """A real PNG in a given mode (L, LA, RGB, RGBA, P) of random content."""
    rng = np.random.default_rng(seed)
    gray = Image.fromarray((rng.random((size, size)) * 255).astype(np.uint8))
    out = io.BytesIO()
    gray.convert(mode).save(out, format="PNG")
    return out.getvalue()


numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(0, 1),
)
json_values = st.recursive(
    st.none() | st.booleans() | numbers | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=30) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=60,
)
pixel_like = st.lists(st.lists(numbers, min_size=26, max_size=30), min_size=26, max_size=30)
json_bodies = st.one_of(
    json_values.map(json.dumps),
    st.fixed_dictionaries({"pixels": pixel_like | json_values}).map(json.dumps),
    st.fixed_dictionaries({"images": st.lists(pixel_like, max_size=3) | json_values}).map(
        json.dumps
    ),
    st.integers(1, 3000).map(lambda n: "[" * n + "]" * n),
).map(str.encode)
images = st.builds(
    _png, st.sampled_from(["L", "LA", "RGB", "RGBA", "P"]), st.integers(1, 64), st.integers(0, 9)
)
mutated_images = st.tuples(images, st.integers(0, 400), st.binary(max_size=16)).map(
    lambda t: t[0][: t[1]] + t[2] + t[0][t[1] + len(t[2]) :]
)
digit = digit_to_png(np.eye(28, dtype=np.float32), size=56)
bodies = st.one_of(st.binary(max_size=2000), json_bodies, images, mutated_images, st.just(digit))
header_names = st.text("abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12).filter(
    lambda name: name not in ("content-length", "transfer-encoding", "host", "content-type")
)
# Printable ASCII without leading or trailing blanks: HTTP clients refuse to send those.
header_values = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40).map(
    str.strip
)
requests = st.fixed_dictionaries(
    {
        "path": st.sampled_from(PATHS),
        "method": st.sampled_from(["POST", "POST", "POST", "GET", "PUT"]),
        "media_type": st.sampled_from(MEDIA_TYPES) | header_values,
        "body": bodies,
        "as_form": st.booleans(),
        "headers": st.dictionaries(header_names, header_values, max_size=4),
    }
)


def _send(client: httpx.Client, r: dict) -> httpx.Response:
    """One request: the body raw with the media type, or as a multipart form's upload."""
    headers = dict(r["headers"])
    if r["as_form"] and r["method"] == "POST":
        field = "files" if r["path"].endswith("batch") else "file"
        files = {field: ("x", r["body"], r["media_type"] or "application/octet-stream")}
        return client.request(r["method"], r["path"], files=files, headers=headers)
    if r["media_type"]:
        headers["content-type"] = r["media_type"]
    return client.request(r["method"], r["path"], content=r["body"], headers=headers)


@settings(
    max_examples=150,
    deadline=None,  # our own bound below, measured around the HTTP call alone
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,  # CI runs the same examples every time; failures reproduce
    database=None,
)
@given(request=requests)
def test_any_request_gets_a_2xx_or_a_json_4xx_in_time(server, request):
    with httpx.Client(base_url=server, timeout=TIME_BOUND_S + 5) as client:
        tic = time.perf_counter()
        reply = _send(client, request)
        elapsed = time.perf_counter() - tic
    assert elapsed < TIME_BOUND_S, f"{elapsed:.1f} s"
    assert 200 <= reply.status_code < 300 or 400 <= reply.status_code < 500, reply.text
    if reply.status_code >= 400:
        body = reply.json()
        assert body["status"] == reply.status_code
        assert isinstance(body["error"], str) and body["error"]


def test_server_is_up_after_the_fuzzing(server):
    # Runs after the fuzz test (file order): the same module-scoped server still answers.
    assert httpx.get(f"{server}/health", timeout=5).json()["status"] == "ok"
