"""Load-test the HTTP service with real PNG digits from MNIST's test set.

Against a running service:
    python -m dlbook.loadtest --url http://127.0.0.1:8000 --requests 2000 --concurrency 16

Or start the service itself, once per setting, and compare them side by side in one run (the
servers run at the same time, idle but for the setting being measured; with --rounds > 1 the
settings take turns, so a change in the machine's load hits all of them alike):
    python -m dlbook.loadtest --model artifacts/package/cnn-1.0.0 \\
        --backends eager onnx --batch-window-ms 0 2 --rounds 3

or exactly the settings named, each BACKEND:BATCH_WINDOW_MS:WORKERS:
    python -m dlbook.loadtest --model artifacts/package/cnn-1.0.0 \\
        --setting eager:0:1 --setting onnx:2:1 --setting onnx:2:2 --rounds 3

Each request POSTs one PNG (`Content-Type: image/png`) to /predict; a request counts as an
error unless it answers 200 with a label. The clients are asyncio tasks in one thread, each with
its own keep-alive connection. Two clients: `raw` (default) writes prepared HTTP/1.1 requests on
the socket and reads the answers with a minimal parser, spending about 0.3 ms of CPU per
request; `httpx` spends about 2.5 ms. Where client and server share the same cores (as on a
laptop or a 2-core CI machine) the client's CPU is taken from the server, so a heavy client
measures itself: use `raw` to measure the service, `httpx` for what a Python client sees.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import itertools
import json
import sys
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from .cli import parser_for
from .preprocess import digit_to_png
from .serve import BATCH_WINDOW_MS, running_server


@dataclass(frozen=True)
class LoadResult:
    """What a load test measured: counts, wall time and every request's latency (ms)."""

    requests: int
    errors: int
    seconds: float
    latencies_ms: np.ndarray = field(repr=False)  # (requests,) client-side, end to end
    first_error: str | None = None

    @property
    def throughput(self) -> float:
        """Requests per second (errors included)."""
        return self.requests / self.seconds

    def percentile(self, q: float) -> float:
        """The q-th percentile of the latencies in ms."""
        return float(np.percentile(self.latencies_ms, q))

    def summary(self) -> dict[str, float | int]:
        """Throughput (requests/s), p50/p90/p99 latency (ms) and the error count."""
        return {
            "requests": self.requests,
            "throughput_rps": round(self.throughput, 1),
            "p50_ms": round(self.percentile(50), 1),
            "p90_ms": round(self.percentile(90), 1),
            "p99_ms": round(self.percentile(99), 1),
            "errors": self.errors,
        }

    @staticmethod
    def merge(results: Sequence[LoadResult]) -> LoadResult:
        """Several runs of one setting as one: counts and times added, latencies pooled."""
        errors = [r.first_error for r in results if r.first_error]
        return LoadResult(
            requests=sum(r.requests for r in results),
            errors=sum(r.errors for r in results),
            seconds=sum(r.seconds for r in results),
            latencies_ms=np.concatenate([r.latencies_ms for r in results]),
            first_error=errors[0] if errors else None,
        )


def mnist_pngs(n: int = 100, root: Path | None = None) -> list[bytes]:
    """The first n test digits of MNIST as 28x28 PNG bytes (white ink on black)."""
    from torchvision import datasets

    from .data import ensure_mnist

    images = datasets.MNIST(ensure_mnist(root), train=False).data[:n].numpy()  # (n, 28, 28)
    return [digit_to_png(image / 255.0) for image in images]


CLIENTS = ("raw", "httpx")


def _check(status: int, body: bytes) -> str | None:
    """None for a 200 answer with a label, else what went wrong."""
    try:
        if status == 200 and "label" in json.loads(body):
            return None
    except ValueError:
        pass
    return f"HTTP {status}: {body[:200].decode(errors='replace')}"


async def _raw_requests(
    url: str, pngs: Sequence[bytes], counter: Iterator[int], n: int, timeout: float, out: Record
) -> None:
    """One client on one keep-alive connection: prepared requests, a minimal reply parser."""
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    head = f"POST /predict HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: image/png\r\n"
    prepared = [f"{head}Content-Length: {len(p)}\r\n\r\n".encode() + p for p in pngs]
    conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def exchange(request: bytes) -> tuple[int, bytes, bool]:
        nonlocal conn
        if conn is None:
            conn = await asyncio.open_connection(host, port)
        reader, writer = conn
        writer.write(request)
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
        status = int(head.split(" ", 2)[1])
        length = int(head.split("content-length:", 1)[1].split("\r\n", 1)[0])
        return status, await reader.readexactly(length), "connection: close" in head

    while (i := next(counter)) < n:
        tic = time.perf_counter()
        try:
            status, body, close = await asyncio.wait_for(
                exchange(prepared[i % len(prepared)]), timeout
            )
            out.error(i, _check(status, body))
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError) as err:
            out.error(i, f"{type(err).__name__}: {err}")
            close = True
        out.latencies[i] = 1e3 * (time.perf_counter() - tic)
        if close and conn is not None:
            conn[1].close()
            conn = None
    if conn is not None:
        conn[1].close()


async def _httpx_requests(
    url: str, pngs: Sequence[bytes], counter: Iterator[int], n: int, timeout: float, out: Record
) -> None:
    """One client with its own httpx.AsyncClient (one keep-alive connection)."""
    headers = {"content-type": "image/png"}
    async with httpx.AsyncClient(base_url=url, timeout=timeout) as http:
        while (i := next(counter)) < n:
            tic = time.perf_counter()
            try:
                r = await http.post("/predict", content=pngs[i % len(pngs)], headers=headers)
                out.error(i, _check(r.status_code, r.content))
            except httpx.HTTPError as err:
                out.error(i, f"{type(err).__name__}: {err}")
            out.latencies[i] = 1e3 * (time.perf_counter() - tic)


@dataclass
class Record:
    """Latencies (ms) by request index, and the errors seen."""

    latencies: np.ndarray
    errors: list[str] = field(default_factory=list)

    def error(self, i: int, problem: str | None) -> None:
        if problem is not None:
            self.errors.append(f"request {i}: {problem}")


async def _load(
    url: str,
    pngs: Sequence[bytes],
    requests: int,
    concurrency: int,
    timeout: float,
    client: str,
) -> LoadResult:
    counter = itertools.count()  # shared: each client takes the next request index
    record = Record(np.zeros(requests))
    one = _raw_requests if client == "raw" else _httpx_requests
    tic = time.perf_counter()
    await asyncio.gather(
        *(one(url, pngs, counter, requests, timeout, record) for _ in range(concurrency))
    )
    seconds = time.perf_counter() - tic
    errors = record.errors
    return LoadResult(requests, len(errors), seconds, record.latencies, next(iter(errors), None))


def run_load(
    url: str,
    pngs: Sequence[bytes],
    requests: int = 2000,
    concurrency: int = 16,
    timeout: float = 30.0,
    client: str = "raw",
) -> LoadResult:
    """POST `requests` PNGs (cycling through `pngs`) to url/predict from `concurrency` clients
    at once, each request sent as soon as the client's previous one is answered; `client` is
    "raw" (light on CPU) or "httpx"."""
    if requests < 1 or concurrency < 1 or not pngs or client not in CLIENTS:
        raise ValueError(
            f"requests and concurrency must be at least 1, pngs not empty, client in {CLIENTS}"
        )
    load = _load(url, pngs, requests, concurrency, timeout, client)
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # no loop in this thread: the usual case, a script or a test
        return asyncio.run(load)
    # Inside a running loop (a Jupyter cell): run the client's own loop in a worker thread.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, load).result()


def format_table(results: dict[str, LoadResult]) -> str:
    """One line per setting; the throughput ratio is against the first setting."""
    base = next(iter(results.values())).throughput
    lines = [
        f"{'setting':<28} {'req/s':>8} {'x first':>8} {'p50 ms':>8} {'p90 ms':>8} "
        f"{'p99 ms':>8} {'errors':>7}"
    ]
    for name, r in results.items():
        s = r.summary()
        lines.append(
            f"{name:<28} {s['throughput_rps']:>8} {r.throughput / base:>8.2f} {s['p50_ms']:>8} "
            f"{s['p90_ms']:>8} {s['p99_ms']:>8} {s['errors']:>7}"
        )
    return "\n".join(lines)


Setting = tuple[str, float, int]  # (backend, batch window in ms, worker processes)


def setting_name(setting: Setting) -> str:
    """'onnx, batch 2 ms, 2 workers' (one worker is not named)."""
    backend, window, workers = setting
    return f"{backend}, batch {window:g} ms" + (f", {workers} workers" if workers > 1 else "")


def parse_setting(text: str) -> Setting:
    """'onnx:2:2' -> ('onnx', 2.0, 2): backend, batch window in ms, worker processes."""
    try:
        backend, window, workers = text.split(":")
        setting = (backend, float(window), int(workers))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: write BACKEND:WINDOW_MS:WORKERS, e.g. onnx:2:2"
        ) from None
    if backend not in ("eager", "onnx") or not 0 <= setting[1] <= 1000 or setting[2] < 1:
        raise argparse.ArgumentTypeError(
            f"{text!r}: backend eager or onnx, window 0-1000 ms, at least 1 worker"
        )
    return setting


def compare(
    model_dir: Path | str,
    backends: Sequence[str] = ("eager", "onnx"),
    batch_windows_ms: Sequence[float] = (BATCH_WINDOW_MS,),
    *,
    workers: Sequence[int] = (1,),
    settings: Sequence[Setting] | None = None,
    requests: int = 2000,
    concurrency: int = 16,
    rounds: int = 1,
    warmup: int = 100,
    threads: int = 1,
    pngs: Sequence[bytes] | None = None,
    client: str = "raw",
) -> dict[str, LoadResult]:
    """Start the service once per setting, then load each in turn for `rounds` rounds of
    `requests` requests (after `warmup` unmeasured ones); results by setting name.

    The settings are `settings` if given, else every (backend, batch window, workers).
    """
    pngs = pngs or mnist_pngs()
    chosen = settings or [(b, w, n) for b in backends for w in batch_windows_ms for n in workers]
    by_name = {setting_name(setting): setting for setting in chosen}
    runs: dict[str, list[LoadResult]] = {name: [] for name in by_name}
    with contextlib.ExitStack() as stack:
        urls = {
            name: stack.enter_context(
                running_server(
                    model_dir,
                    threads=threads,
                    backend=backend,
                    batch_window_ms=window,
                    max_concurrency=max(64, 2 * concurrency),
                    workers=n,
                )
            )
            for name, (backend, window, n) in by_name.items()
        }
        for url in urls.values():
            run_load(url, pngs, warmup, concurrency, client=client)
        for _ in range(rounds):
            for name, url in urls.items():
                runs[name].append(run_load(url, pngs, requests, concurrency, client=client))
    return {name: LoadResult.merge(r) for name, r in runs.items()}


def main(argv: list[str] | None = None) -> int:
    """Run the load test; print the results; exit 1 if any request failed."""
    parser = parser_for("dlbook.loadtest", __doc__)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="a running service's base URL")
    target.add_argument("--model", type=Path, help="a package folder: start the service itself")
    parser.add_argument("--requests", type=int, default=2000, help="per setting and round")
    parser.add_argument("--concurrency", type=int, default=16, help="clients at once")
    parser.add_argument(
        "--backends", nargs="+", choices=("eager", "onnx"), default=["eager", "onnx"]
    )
    parser.add_argument(
        "--batch-window-ms",
        type=float,
        nargs="+",
        default=[BATCH_WINDOW_MS],
        help="the services' batching windows to compare (0: off; default: the service's, "
        "%(default)s)",
    )
    parser.add_argument(
        "--client", choices=CLIENTS, default="raw", help="see above (default: %(default)s)"
    )
    parser.add_argument("--rounds", type=int, default=1, help="settings take turns this often")
    parser.add_argument("--threads", type=int, default=1, help="the services' --threads")
    parser.add_argument("--images", type=int, default=100, help="distinct MNIST test digits")
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[1], help="the services' --workers to compare"
    )
    parser.add_argument(
        "--setting",
        type=parse_setting,
        action="append",
        metavar="BACKEND:WINDOW_MS:WORKERS",
        help="compare exactly these settings instead of every combination of --backends, "
        "--batch-window-ms and --workers (repeat it; e.g. --setting eager:0:1 --setting onnx:2:2)",
    )
    args = parser.parse_args(argv)
    if min(args.workers) < 1:
        parser.error("--workers must be at least 1")
    for flag in ("requests", "concurrency", "rounds", "threads", "images"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be at least 1")
    pngs = mnist_pngs(args.images)
    if args.url:
        result = run_load(args.url, pngs, args.requests, args.concurrency, client=args.client)
        results = {args.url: result}
    else:
        options = {k: getattr(args, k) for k in ("requests", "concurrency", "rounds", "threads")}
        results = compare(
            args.model,
            args.backends,
            args.batch_window_ms,
            pngs=pngs,
            client=args.client,
            workers=args.workers,
            settings=args.setting,
            **options,
        )
    rounds = "" if args.url else f" x {args.rounds} round(s)"
    print(f"{args.requests} requests{rounds}, {args.concurrency} concurrent {args.client} clients")
    print(format_table(results))
    for name, r in results.items():
        if r.first_error:
            print(f"{name}: {r.errors} errors, the first: {r.first_error}", file=sys.stderr)
    return 1 if any(r.errors for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
