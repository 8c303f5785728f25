"""dlbook.access and the service's security options: API keys, rate limits, TLS, the access log."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import logging
import os
import re
import ssl
import tempfile
from pathlib import Path

import httpx
import pytest
import torch
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import dlbook as dl
from dlbook import access, serve, vault
from dlbook.access import AccessError, KeyStore, RateLimiter
from dlbook.package import model_card, save_package
from dlbook.preprocess import digit_to_png

PIXELS = [[0.0] * 28 for _ in range(10)] + [[0.0] * 10 + [1.0] * 8 + [0.0] * 10] * 8
PIXELS += [[0.0] * 28 for _ in range(10)]  # a bar: a digit-like blob, 28x28


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> Path:
    """A small (untrained) MLP package."""
    torch.manual_seed(0)
    model = dl.MLP(hidden=16)
    card = model_card(model, dl.Recipe("mlp", {"hidden": 16}), {"test_acc": 0.9}, "1.0.0")
    return save_package(tmp_path_factory.mktemp("plain") / "pkg", model, card)


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A keys file with two keys, and the keys by id."""
    path = tmp_path_factory.mktemp("keys") / "api-keys.txt"
    return path, {name: access.add_key(path, name) for name in ("alice", "bob")}


# Keys and the keys file.


def test_a_key_identifies_its_owner_and_nothing_else(keys_file):
    path, tokens = keys_file
    store = KeyStore.load(path)
    assert store.identify(tokens["alice"]) == "alice" and store.identify(tokens["bob"]) == "bob"
    key_id, _, secret = tokens["alice"].partition(".")
    assert len(secret) == 43 and tokens["alice"] not in path.read_text()  # only its digest
    for wrong in [f"alice.{secret[:-1]}x", f"bob.{secret}", f"carol.{secret}", secret, "", "."]:
        assert store.identify(wrong) is None


def test_unknown_ids_are_compared_in_constant_time_too(keys_file, monkeypatch):
    calls = []
    compare = access.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((len(a), len(b)))
        return compare(a, b)

    monkeypatch.setattr(access.hmac, "compare_digest", spy)
    store = KeyStore.load(keys_file[0])
    store.identify("alice.wrong")
    store.identify("nobody.wrong")
    assert calls == [(32, 32), (32, 32)]


def test_add_creates_an_owner_only_file_and_refuses_duplicates(tmp_path):
    path = tmp_path / "keys"
    access.add_key(path, "a")
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(AccessError, match="already has a key 'a'"):
        access.add_key(path, "a")
    for bad in ["", "has space", "dot.ted", "x" * 65]:
        with pytest.raises(AccessError, match="1-64 letters"):
            access.add_key(path, bad)


def test_revoke(tmp_path):
    path = tmp_path / "keys"
    token = access.add_key(path, "a")
    access.add_key(path, "b")
    access.revoke_key(path, "a")
    assert KeyStore.load(path).identify(token) is None and set(KeyStore.load(path).records) == {"b"}
    with pytest.raises(AccessError, match="has no key 'a'"):
        access.revoke_key(path, "a")


@pytest.mark.parametrize(
    "text, words",
    [
        ("", "holds no keys"),
        ("# only a comment\n", "holds no keys"),
        ("alice sha256 00\n", ":1: expected '<id> sha256 <salt> <digest>'"),
        (f"alice md5 {'0' * 32} {'0' * 64}\n", "expected"),
        (f"al!ce sha256 {'0' * 32} {'0' * 64}\n", "a key id is"),
        (f"alice sha256 {'z' * 32} {'0' * 64}\n", "must be hex digits"),
        (f"alice sha256 {'0' * 30} {'0' * 64}\n", "salt must be 16 bytes"),
        (f"a sha256 {'0' * 32} {'0' * 64}\n\na sha256 {'0' * 32} {'0' * 64}\n", ":3: key id 'a'"),
    ],
)
def test_bad_keys_files(tmp_path, text, words):
    path = tmp_path / "keys"
    path.write_text(text)
    with pytest.raises(AccessError, match=words):
        KeyStore.load(path)


def test_keys_file_missing_or_writable_by_others(tmp_path):
    with pytest.raises(AccessError, match="cannot read keys file .*No such file"):
        KeyStore.load(tmp_path / "nope")
    path = tmp_path / "keys"
    access.add_key(path, "a")
    path.chmod(0o666)
    with pytest.raises(AccessError, match="writable by other users"):
        KeyStore.load(path)


# The rate limit.


@pytest.mark.parametrize(
    "text, rate", [("10/s", 10), ("2.5/sec", 2.5), ("60/min", 1), ("7200/h", 2), (" 1/s ", 1)]
)
def test_parse_rate(text, rate):
    assert access.parse_rate(text) == rate


@pytest.mark.parametrize("text", ["", "10", "0/s", "-1/s", "1/day", "inf/s", "1e3/s", "x/s"])
def test_bad_rates(text):
    with pytest.raises(AccessError, match="write N/s, N/min or N/h"):
        access.parse_rate(text)


def test_token_bucket():
    now = [0.0]
    limiter = RateLimiter(rate=2.0, burst=3, clock=lambda: now[0])
    assert [limiter.wait("a") for _ in range(3)] == [0, 0, 0]  # the burst
    assert limiter.wait("a") == pytest.approx(0.5)  # one token refills in 1/rate s
    assert limiter.wait("b") == 0  # each client its own bucket
    now[0] = 0.5
    assert limiter.wait("a") == 0 and limiter.wait("a") == pytest.approx(0.5)
    now[0] = 100.0
    assert [limiter.wait("a") for _ in range(4)][-1] > 0  # refilled to the burst, no more
    with pytest.raises(AccessError):
        RateLimiter(0, 1)
    with pytest.raises(AccessError):
        RateLimiter(1, 0)


def test_idle_buckets_are_forgotten(monkeypatch):
    monkeypatch.setattr(access, "MAX_CLIENTS", 10)
    now = [0.0]
    limiter = RateLimiter(rate=1.0, burst=1, clock=lambda: now[0])
    for i in range(10):
        limiter.wait(f"c{i}")
    now[0] = 5.0  # all full again
    limiter.wait("new")
    assert set(limiter.buckets) == {"new"}


# The middleware, in process.


class InProcess:
    """A synchronous client of an ASGI app, in this process (httpx's ASGI transport)."""

    def __init__(self, app) -> None:
        self.app = app

    def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                return await client.request(method, path, **kwargs)

        return asyncio.run(send())

    def get(self, path: str, **kwargs) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs) -> httpx.Response:
        return self.request("POST", path, **kwargs)


@pytest.fixture(scope="module")
def guarded(plain, keys_file):
    """The service with keys and a limit of 1 request/s, burst 3, in process."""
    app = serve.create_app(
        plain, backend="eager", batch_window_ms=0, api_keys=keys_file[0], rate_limit=1.0, burst=3
    )
    return InProcess(app)


INVALID_REQUEST = 'Bearer realm="dlbook", error="invalid_request"'


def _bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@pytest.mark.parametrize(
    "headers, challenge, words",
    [
        ({}, 'Bearer realm="dlbook"', "missing API key"),
        (_bearer("alice.wrong"), 'Bearer realm="dlbook", error="invalid_token"', "invalid API key"),
        (_bearer("x" * 300), 'Bearer realm="dlbook", error="invalid_token"', "invalid API key"),
        ({"authorization": "Basic YTpi"}, INVALID_REQUEST, "malformed"),
        ({"authorization": "Bearer "}, INVALID_REQUEST, "malformed"),
    ],
)
def test_401_with_a_challenge(guarded, headers, challenge, words):
    r = guarded.post("/predict", json={"pixels": PIXELS}, headers=headers)
    assert r.status_code == 401 and r.headers["www-authenticate"] == challenge
    assert words in r.json()["error"] and r.json()["status"] == 401
    assert r.headers["connection"] == "close"  # the body was not read


def test_health_without_a_key_says_only_that_it_lives(guarded, keys_file):
    r = guarded.get("/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    full = guarded.get("/health", headers=_bearer(keys_file[1]["bob"])).json()
    assert full["status"] == "ok" and full["backend"] == "eager" and "model_version" in full
    assert guarded.get("/health", headers=_bearer("bob.wrong")).status_code == 401
    assert guarded.get("/docs").status_code == 401  # every other path needs a key


def test_429_with_retry_after_beyond_the_burst(guarded, keys_file):
    alice = _bearer(keys_file[1]["alice"])
    statuses = [guarded.post("/predict", json={"pixels": PIXELS}, headers=alice) for _ in range(5)]
    assert [r.status_code for r in statuses][:3] == [200, 200, 200]
    over = statuses[-1]
    assert over.status_code == 429 and over.headers["retry-after"] == "1"
    assert "rate limit exceeded" in over.json()["error"]
    assert guarded.get("/health", headers=alice).status_code == 200  # /health is not limited
    carol = access.add_key(keys_file[0], "carol")  # not in the running service's store
    assert guarded.get("/health", headers=_bearer(carol)).status_code == 401


def test_the_access_log_names_the_key_never_the_image(plain, keys_file, caplog):
    app = serve.create_app(plain, backend="eager", batch_window_ms=0, api_keys=keys_file[0])
    png = digit_to_png(torch.tensor(PIXELS).numpy())
    client = InProcess(app)
    with caplog.at_level(logging.INFO, logger="dlbook.access"):
        headers = {**_bearer(keys_file[1]["alice"]), "content-type": "image/png"}
        assert client.post("/predict?secret=1", content=png, headers=headers).status_code == 200
        client.get("/he%0Aalth")
        client.post("/predict", content=png, headers={"content-type": "image/png"})
    lines = [r.getMessage() for r in caplog.records if r.name == "dlbook.access"]
    assert len(lines) == 3
    assert re.fullmatch(r'127\.0\.0\.1 alice "POST /predict" 200 \d+\.\dms', lines[0])
    assert re.fullmatch(r'127\.0\.0\.1 - "GET /he\\nalth" 401 \d+\.\dms', lines[1])
    assert re.fullmatch(r'127\.0\.0\.1 - "POST /predict" 401 \d+\.\dms', lines[2])
    text = "\n".join(lines)
    assert "secret" not in text and "PNG" not in text and keys_file[1]["alice"] not in text


def test_without_keys_the_limit_is_per_client_address(plain):
    app = serve.create_app(plain, backend="eager", batch_window_ms=0, rate_limit=1.0, burst=1)
    client = InProcess(app)
    assert client.get("/health").json()["backend"] == "eager"  # the full health
    first = client.post("/predict", json={"pixels": PIXELS})
    second = client.post("/predict", json={"pixels": PIXELS})
    assert (first.status_code, second.status_code) == (200, 429)


# The command line: safe defaults, and every bad option refused in one line with status 2.


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "localhost", "[::1]"])
def test_loopback_hosts(host):
    assert serve.is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1", "no-such-host.invalid"])
def test_other_hosts(host):
    assert not serve.is_loopback(host)


def _usage_error(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as info:
        serve.main(argv)
    assert info.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_a_public_address_needs_keys(plain, capsys):
    line = _usage_error(capsys, ["--model", str(plain), "--host", "0.0.0.0"])
    assert "reachable from other machines: give --api-keys" in line and "--insecure-public" in line


def test_insecure_public_overrides_and_keys_without_tls_warn(tmp_path, keys_file, capsys):
    missing = ["--model", str(tmp_path / "none"), "--host", "0.0.0.0"]
    assert serve.main(missing + ["--insecure-public"]) == 2  # past the check, to the model
    assert "cannot load the model" in capsys.readouterr().err
    assert serve.main(missing + ["--api-keys", str(keys_file[0])]) == 2
    assert "warning: API keys will cross the network in clear text" in capsys.readouterr().err


@pytest.fixture
def bad_files(tmp_path) -> dict[str, str]:
    (tmp_path / "open.key").write_text("00" * 32)
    (tmp_path / "open.key").chmod(0o644)
    (tmp_path / "garbage.pem").write_text("not a certificate")
    return {"dir": str(tmp_path)}


@pytest.mark.parametrize(
    "options, words",
    [
        (["--rate-limit", "lots"], "rate limit 'lots': write N/s"),
        (["--rate-limit", "1/s", "--burst", "0"], "--burst must be at least 1"),
        (["--burst", "3"], "--burst must be at least 1, with --rate-limit"),
        (["--api-keys", "{dir}/none"], "cannot read keys file"),
        (["--key-file", "{dir}/none"], "cannot read key file"),
        (["--key-file", "{dir}/open.key"], "open to other users"),
        (["--ssl-keyfile", "{dir}/garbage.pem"], "--ssl-keyfile needs --ssl-certfile"),
        (["--ssl-certfile", "{dir}/garbage.pem"], "--ssl-certfile/--ssl-keyfile: cannot load"),
        (["--ssl-certfile", "{dir}/none.pem"], "cannot load them"),
    ],
)
def test_bad_security_options(plain, bad_files, capsys, options, words):
    argv = ["--model", str(plain)] + [o.format(**bad_files) for o in options]
    line = _usage_error(capsys, argv)
    assert line.startswith("python -m dlbook.serve: error:") and words in line


def test_an_encrypted_package_without_its_key(plain, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(vault.KEY_ENV, raising=False)
    sealed = vault.encrypt_package(plain, tmp_path / "enc", os.urandom(32))
    assert serve.main(["--model", str(sealed), "--backend", "eager"]) == 2
    assert "is encrypted: give its key (--key-file" in capsys.readouterr().err
    monkeypatch.setenv(vault.KEY_ENV, os.urandom(32).hex())
    assert serve.main(["--model", str(sealed), "--backend", "eager"]) == 2
    assert "wrong key" in capsys.readouterr().err


# End to end: a real server, HTTPS with a self-signed certificate, an encrypted package.


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for localhost and 127.0.0.1, valid for a day, and its private key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    alt = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "tls.crt", folder / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


@pytest.fixture(scope="module")
def secured(plain, keys_file, tmp_path_factory):
    """Encrypted package, keys, 2 requests/s with a burst of 3, HTTPS: (url, ssl context,
    package folder, the server's output so far as text)."""
    folder = tmp_path_factory.mktemp("secured")
    key_file = vault.write_key(folder / "model.key")
    sealed = vault.encrypt_package(plain, folder / "pkg.enc", vault.read_key_file(key_file))
    cert, tls_key = self_signed(folder)
    trust = ssl.create_default_context(cafile=cert)
    with tempfile.TemporaryFile() as output:
        options = dict(key_file=key_file, api_keys=keys_file[0], rate_limit="2/s", burst=3)
        with serve.running_server(
            sealed, ssl_certfile=cert, ssl_keyfile=tls_key, output=output, **options
        ) as url:

            def log() -> str:
                output.seek(0)
                return output.read().decode()

            yield url, trust, sealed, log


def test_tls_end_to_end(secured, keys_file):
    url, trust, _, log = secured
    assert url.startswith("https://127.0.0.1:")
    with httpx.Client(base_url=url, verify=trust) as client:
        assert client.get("/health").json() == {"status": "ok"}
        refused = client.post("/predict", json={"pixels": PIXELS})
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith(
            "Bearer"
        )
        headers = _bearer(keys_file[1]["bob"])
        answers = [
            client.post("/predict", json={"pixels": PIXELS}, headers=headers) for _ in range(6)
        ]
    codes = [r.status_code for r in answers]
    assert codes[:3] == [200] * 3 and 429 in codes
    over = answers[codes.index(429)]
    assert int(over.headers["retry-after"]) >= 1
    assert answers[0].json()["model_version"].startswith("dlbook-mnist-mlp:1.0.0+")
    with pytest.raises(httpx.ConnectError):  # a client that does not trust the certificate
        httpx.get(f"{url}/health")
    with pytest.raises(httpx.TransportError):  # plain HTTP on the TLS port
        httpx.get(url.replace("https", "http") + "/health")
    lines = [line for line in log().splitlines() if " access " in line]
    assert any(re.search(r'127\.0\.0\.1 bob "POST /predict" 200 [\d.]+ms$', s) for s in lines)
    assert any(re.search(r'127\.0\.0\.1 - "POST /predict" 401 [\d.]+ms$', s) for s in lines)
    assert any('bob "POST /predict" 429' in s for s in lines)
    assert "exported in memory, nothing written" in log()
    assert keys_file[1]["bob"] not in log() and json.dumps(PIXELS)[:40] not in log()


def test_serving_an_encrypted_package_writes_no_plaintext(secured):
    _, _, sealed, _ = secured
    assert sorted(p.name for p in sealed.parent.iterdir()) == [
        "model.key",
        "pkg.enc",
        "tls.crt",
        "tls.key",
    ]  # no .onnx-cache beside it
    assert sorted(p.name for p in sealed.iterdir()) == ["model.json.enc", "model.safetensors.enc"]


def test_workers_serve_with_keys_and_tls(plain, keys_file, tmp_path, monkeypatch):
    """Two worker processes: the options (paths, never the key) reach each of them."""
    key = os.urandom(32)
    sealed = vault.encrypt_package(plain, tmp_path / "enc", key)
    monkeypatch.setenv(vault.KEY_ENV, key.hex())  # the key from the environment this time
    cert, tls_key = self_signed(tmp_path)
    trust = ssl.create_default_context(cafile=cert)
    options = dict(backend="eager", workers=2, api_keys=keys_file[0])
    tls = dict(ssl_certfile=cert, ssl_keyfile=tls_key)
    alice = _bearer(keys_file[1]["alice"])
    with tempfile.TemporaryFile() as output:
        with serve.running_server(sealed, output=output, **options, **tls) as url:
            client = httpx.Client(base_url=url, verify=trust)
            assert client.get("/health").json() == {"status": "ok"}
            assert client.post("/predict", json={"pixels": PIXELS}).status_code == 401
            assert (
                client.post("/predict", json={"pixels": PIXELS}, headers=alice).status_code == 200
            )
            client.close()
        output.seek(0)
        text = output.read().decode()
    assert key.hex() not in text and re.search(r'alice "POST /predict" 200', text)
