"""Several server processes on one port, each with its own SO_REUSEPORT socket.

uvicorn's own `--workers` binds one listening socket in a parent process and lets every worker
accept from it. An asyncio worker that wakes up accepts every connection waiting at that moment,
so when 16 keep-alive clients connect in a burst, one worker can take most of them while the
other idles (in two of five load tests on 2 cores, two uvicorn workers served no faster than
one). Here each worker opens its own listening socket on the same port
with SO_REUSEPORT, and Linux assigns each new connection to one of them by a hash of its
addresses: the connections spread over the workers whatever the timing.

The parent holds the port (bound, not listening, so it receives no connection), starts the
workers, lets them listen only once all of them have loaded the model, restarts a worker that
dies after it started listening (one that dies before stops the service: a restart would fail
alike), and stops them all on SIGTERM or SIGINT.

Linux only: elsewhere SO_REUSEPORT does not balance (`BALANCED` is False) and the service falls
back to uvicorn's workers.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import wait
from typing import Any

BALANCED = sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")
BACKLOG = 2048  # connections the kernel queues per worker before it refuses more
STARTUP_TIMEOUT = 300.0  # seconds for every worker to load the model


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A TCP socket with SO_REUSEPORT bound to (host, port), not yet listening."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def _serve_one(
    make_app: Callable[[], Any], settings: dict, port: int, barrier: Any | None, ready: Any
) -> None:
    """One worker process: build the app, wait for the others, then listen and serve."""
    import uvicorn

    app = make_app()
    if barrier is not None:  # listen only when every worker can take connections
        barrier.wait(STARTUP_TIMEOUT)
    sock = reuseport_socket(settings["host"], port)
    sock.listen(BACKLOG)
    ready.set()
    config = uvicorn.Config(app, **{**settings, "port": port})
    uvicorn.Server(config).run(sockets=[sock])


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """An event that SIGTERM or SIGINT sets while in the block; the old handlers after it."""
    event = threading.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    previous = {signum: signal.signal(signum, lambda *_: event.set()) for signum in signals}
    try:
        yield event
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run_workers(make_app: Callable[[], Any], settings: dict, workers: int) -> int:
    """Serve `make_app()` from `workers` processes on settings' host and port; the exit status.

    `make_app` must be picklable (a module-level function or a functools.partial of one): each
    worker calls it in a fresh interpreter. `settings` are uvicorn.Config's keywords, with
    "host" and "port". Returns 0 after SIGTERM/SIGINT, 1 if a worker fails to start, 2 if the
    port cannot be bound.
    """
    try:
        holder = reuseport_socket(settings["host"], settings["port"])
    except OSError as err:
        print(f"error: cannot bind {settings['host']}:{settings['port']}: {err}", file=sys.stderr)
        return 2
    port = holder.getsockname()[1]
    spawn = multiprocessing.get_context("spawn")
    barrier = spawn.Barrier(workers)

    def start(barrier: Any | None) -> tuple[Any, Any]:
        ready = spawn.Event()
        args = (make_app, settings, port, barrier, ready)
        process = spawn.Process(target=_serve_one, args=args)
        process.start()
        return process, ready

    status = 0
    with holder, _stop_on_signals() as stop:
        running = [start(barrier) for _ in range(workers)]
        while not stop.is_set():
            wait([p.sentinel for p, _ in running], timeout=0.5)
            for i, (process, ready) in enumerate(running):
                if process.is_alive() or stop.is_set():
                    continue
                if not ready.is_set():  # it never listened: a restart would fail alike
                    print(
                        f"error: worker {process.pid} exited with status {process.exitcode} "
                        "while starting; stopping the service",
                        file=sys.stderr,
                    )
                    barrier.abort()
                    stop.set()
                    status = 1
                    break
                print(
                    f"worker {process.pid} exited with status {process.exitcode}; starting another",
                    file=sys.stderr,
                )
                running[i] = start(None)
        _stop_all([p for p, _ in running])
    return status


def _stop_all(processes: list[Any], grace: float = 10.0) -> None:
    """SIGTERM every worker (uvicorn finishes open requests), SIGKILL any left after `grace` s."""
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            if process.is_alive():
                process.terminate()
    deadline = time.monotonic() + grace
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()
