"""Who may use the service and how often: API keys, a per-key rate limit, an access log.

python -m dlbook.access add    --keys-file api-keys.txt --id alice   # prints the new key once
python -m dlbook.access revoke --keys-file api-keys.txt --id alice

A key is "<id>.<secret>", the secret 32 random bytes (43 URL-safe characters). The keys file
holds one line per key, "<id> sha256 <salt> <digest>": the SHA-256 of a random 16-byte salt
followed by the whole key, never the key itself. A slow password hash (scrypt, PBKDF2) makes
guessing a human's password expensive; a 256-bit random secret cannot be guessed at any speed,
so here a slow hash would only add its cost to every request (and hand a client a lever to
load the server). The salt makes equal keys in two files look different.

The service (`python -m dlbook.serve --api-keys FILE`) wraps its app in `AccessControl`: a
request without `Authorization: Bearer <key>`, or with an unknown key, gets 401 with
`WWW-Authenticate: Bearer`, except GET /health, which without a key answers only
{"status": "ok"}; with `--rate-limit`, each key (each client address, without keys) gets a
token bucket, and a request over it gets 429 with `Retry-After`. Each request is logged in
one line: client address, key id (or "-"), method, path, status and latency; never a header's
value, the query or the body.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import os
import re
import secrets
import stat
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.datastructures import Headers
from starlette.responses import JSONResponse

from .cli import parser_for

KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # what a key id may be (it is logged as is)
MAX_TOKEN = 256  # longer Authorization values are refused unhashed
REALM = 'Bearer realm="dlbook"'
RATE = re.compile(r"(\d+(?:\.\d*)?)/(s|sec|second|m|min|minute|h|hour)")
SECONDS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}
MAX_CLIENTS = 10_000  # rate-limit buckets kept before idle ones are forgotten

log = logging.getLogger("dlbook.access")


class AccessError(ValueError):
    """A keys file, a key id or a rate limit is unusable; the message names the problem."""


@dataclass(frozen=True)
class KeyRecord:
    """One key as the keys file stores it: a salt and SHA-256(salt + key)."""

    salt: bytes
    digest: bytes


def key_digest(salt: bytes, token: str) -> bytes:
    """SHA-256 of the salt followed by the key's UTF-8 bytes."""
    return hashlib.sha256(salt + token.encode("utf-8", "surrogatepass")).digest()


_NOBODY = KeyRecord(bytes(16), bytes(32))  # compared against for unknown ids: the same work


class KeyStore:
    """The service's API keys, by id, as salted SHA-256 digests."""

    def __init__(self, records: dict[str, KeyRecord]) -> None:
        self.records = records

    @classmethod
    def load(cls, path: Path) -> KeyStore:
        """Read a keys file; AccessError naming the file and line of any problem."""
        records = _read_keys(path)
        if not records:
            raise AccessError(f"keys file {path} holds no keys: add one with {ADD_COMMAND}")
        return cls(records)

    def identify(self, token: str) -> str | None:
        """The id of the key `token`, or None; compares digests in constant time."""
        key_id, _, _ = token.partition(".")
        record = self.records.get(key_id, _NOBODY)
        same = hmac.compare_digest(key_digest(record.salt, token), record.digest)
        return key_id if same and key_id in self.records else None


ADD_COMMAND = "python -m dlbook.access add --keys-file FILE --id NAME"


def _read_keys(path: Path) -> dict[str, KeyRecord]:
    """The records of a keys file, by key id; AccessError naming the file and line."""
    try:
        if os.name == "posix" and path.stat().st_mode & 0o022:
            raise AccessError(
                f"keys file {path} is writable by other users (anyone could add a key): "
                f"chmod 600 {path}"
            )
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or "not UTF-8 text"
        raise AccessError(f"cannot read keys file {path}: {reason}") from None
    records: dict[str, KeyRecord] = {}
    for number, line in enumerate(lines, 1):
        if line.strip() and not line.lstrip().startswith("#"):
            key_id, record = _parse_line(line, f"{path}:{number}")
            if key_id in records:
                raise AccessError(f"{path}:{number}: key id {key_id!r} appears twice")
            records[key_id] = record
    return records


def _parse_line(line: str, where: str) -> tuple[str, KeyRecord]:
    """(key id, record) of one line "<id> sha256 <salt hex> <digest hex>"."""
    fields = line.split()
    if len(fields) != 4 or fields[1] != "sha256":
        raise AccessError(f"{where}: expected '<id> sha256 <salt> <digest>' (see {ADD_COMMAND})")
    key_id, _, salt, digest = fields
    if not KEY_ID.fullmatch(key_id):
        raise AccessError(f"{where}: a key id is 1-64 letters, digits, '_' or '-'")
    try:
        record = KeyRecord(bytes.fromhex(salt), bytes.fromhex(digest))
    except ValueError:
        raise AccessError(f"{where}: the salt and digest must be hex digits") from None
    if len(record.salt) != 16 or len(record.digest) != 32:
        raise AccessError(f"{where}: the salt must be 16 bytes and the digest 32")
    return key_id, record


def add_key(path: Path, key_id: str) -> str:
    """Append a new key named `key_id` to the keys file (created, mode 600); return the key."""
    if not KEY_ID.fullmatch(key_id):
        raise AccessError(f"key id {key_id!r}: use 1-64 letters, digits, '_' or '-'")
    if path.exists() and key_id in _read_keys(path):
        raise AccessError(f"{path} already has a key {key_id!r}: revoke it first")
    token = f"{key_id}.{secrets.token_urlsafe(32)}"
    salt = secrets.token_bytes(16)
    line = f"{key_id} sha256 {salt.hex()} {key_digest(salt, token).hex()}\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as f:
        f.write(line)
    return token


def revoke_key(path: Path, key_id: str) -> None:
    """Remove the key `key_id` from the keys file (rewritten through a rename)."""
    _read_keys(path)  # a malformed file is refused, not rewritten
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = [line for line in lines if line.split()[:1] != [key_id]]
    if len(kept) == len(lines):
        raise AccessError(f"{path} has no key {key_id!r}")
    # checkpoint.atomic_write's rename, with the file's mode kept; not imported from there,
    # which would load torch into a command that must start instantly
    part = path.with_name(path.name + ".part")
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, stat.S_IMODE(path.stat().st_mode))
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.writelines(kept)
    os.replace(part, path)


def parse_rate(text: str) -> float:
    """Requests per second from "N/s", "N/min" or "N/h" (N > 0); AccessError otherwise."""
    match = RATE.fullmatch(text.strip())
    rate = float(match[1]) / SECONDS[match[2]] if match else 0.0
    if not (math.isfinite(rate) and rate > 0):
        raise AccessError(f"rate limit {text!r}: write N/s, N/min or N/h with N > 0 (e.g. 10/s)")
    return rate


class RateLimiter:
    """A token bucket per client: up to `burst` requests at once, refilled at `rate` per second."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        if not (math.isfinite(rate) and rate > 0) or burst < 1:
            raise AccessError("a rate limit needs a rate > 0 and a burst of at least 1")
        self.rate, self.burst, self.clock = rate, burst, clock
        self.buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, when)

    def wait(self, client: str) -> float:
        """0 if `client` may make a request now (it is counted), else seconds until it may."""
        now = self.clock()
        tokens, then = self.buckets.get(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        if tokens >= 1:
            self.buckets[client] = (tokens - 1, now)
            if len(self.buckets) > MAX_CLIENTS:
                self._forget_idle(now)
            return 0.0
        self.buckets[client] = (tokens, now)
        return (1 - tokens) / self.rate

    def _forget_idle(self, now: float) -> None:
        """Drop the buckets that are full again: forgetting them changes nothing."""
        full = [
            c for c, (t, then) in self.buckets.items() if t + (now - then) * self.rate >= self.burst
        ]
        for client in full:
            del self.buckets[client]


def _error(status: int, message: str, headers: dict[str, str]) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


def _has_body(headers: Headers) -> bool:
    return headers.get("content-length", "0") != "0" or "transfer-encoding" in headers


def _printable(text: str, limit: int = 200) -> str:
    """`text` with quotes, backslashes and control or non-ASCII characters escaped: one line."""
    return json.dumps(text[:limit])[1:-1]


class AccessControl:
    """ASGI middleware: API keys (when `keys`), a rate limit (when `limiter`), the access log."""

    def __init__(
        self,
        app: Any,
        keys: KeyStore | None = None,
        limiter: RateLimiter | None = None,
        logger: logging.Logger = log,
    ) -> None:
        self.app, self.keys, self.limiter, self.log = app, keys, limiter, logger

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tic = time.perf_counter()
        status = 500  # if the app fails before it answers

        async def send_and_note(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        key_id, refusal = self.check(scope)
        try:
            await (refusal or self.app)(scope, receive, send_and_note)
        finally:
            client = (scope.get("client") or ("-",))[0]
            request = f"{scope['method']} {_printable(scope['path'])}"
            ms = 1e3 * (time.perf_counter() - tic)
            self.log.info('%s %s "%s" %d %.1fms', client, key_id, request, status, ms)

    def check(self, scope: dict) -> tuple[str, Any]:
        """(the key id or "-", None to serve the request or the response refusing it)."""
        headers = Headers(scope=scope)
        key_id, close = "-", {"connection": "close"} if _has_body(headers) else {}
        health = scope["path"] == "/health" and scope["method"] in ("GET", "HEAD")
        if self.keys is not None:
            values = headers.getlist("authorization")
            if not values:
                if health:  # liveness for anyone; what is served, only with a key
                    return key_id, JSONResponse({"status": "ok"})
                message = "missing API key: send the header 'Authorization: Bearer <key>'"
                return key_id, _error(401, message, {"www-authenticate": REALM, **close})
            scheme, _, token = values[0].partition(" ")
            token = token.strip()
            if len(values) > 1 or scheme.lower() != "bearer" or not token:
                message = "malformed Authorization header: send one, 'Bearer <key>'"
                challenge = f'{REALM}, error="invalid_request"'
                return key_id, _error(401, message, {"www-authenticate": challenge, **close})
            found = self.keys.identify(token) if len(token) <= MAX_TOKEN else None
            if found is None:
                challenge = f'{REALM}, error="invalid_token"'
                return key_id, _error(
                    401, "invalid API key", {"www-authenticate": challenge, **close}
                )
            key_id = found
        if self.limiter is not None and not health:
            client = key_id if self.keys is not None else (scope.get("client") or ("-",))[0]
            wait = self.limiter.wait(client)
            if wait > 0:
                retry = max(1, math.ceil(wait))
                message = f"rate limit exceeded: retry in {retry} s"
                return key_id, _error(429, message, {"retry-after": str(retry), **close})
        return key_id, None


def configure_log() -> None:
    """Write the access log to stderr, one line per request (once per process)."""
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s access %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False  # exactly one line, whatever else configures the root logger


def main(argv: list[str] | None = None) -> int:
    """add or revoke a key; exit status 2 with one line on any problem."""
    parser = parser_for("dlbook.access", __doc__)
    parser.add_argument(
        "command",
        choices=("add", "revoke"),
        help="add: create a key, append its id and digest to the file and print the key once; "
        "revoke: remove a key from the file (restart the service to apply either)",
    )
    parser.add_argument("--keys-file", type=Path, required=True)
    parser.add_argument("--id", required=True, help="the key's name, shown in the access log")
    args = parser.parse_args(argv)
    try:
        if args.command == "add":
            print(add_key(args.keys_file, args.id))
            print(
                f"added key {args.id!r} to {args.keys_file}: this key is shown only once",
                file=sys.stderr,
            )
        else:
            revoke_key(args.keys_file, args.id)
            print(f"revoked key {args.id!r} from {args.keys_file}", file=sys.stderr)
    except (AccessError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
