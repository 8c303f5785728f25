"""dlbook.workers: several server processes on one port, each with its own SO_REUSEPORT socket."""

import functools
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from dlbook import serve, workers

pytestmark = pytest.mark.skipif(not workers.BALANCED, reason="SO_REUSEPORT balances on Linux only")


def _settings(port: int) -> dict:
    return {"host": "127.0.0.1", "port": port, "log_level": "warning"}


def test_a_port_in_use_is_refused_with_status_2(capsys):
    with socket.socket() as taken:  # a plain listener, without SO_REUSEPORT
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status = workers.run_workers(serve.app_from_env, _settings(port), 2)
    assert status == 2
    assert f"cannot bind 127.0.0.1:{port}" in capsys.readouterr().err


def test_a_worker_that_cannot_start_stops_the_service(tmp_path, capsys):
    options = {"model_dir": str(tmp_path / "missing"), "backend": "eager"}
    make_app = functools.partial(serve.app_from_options, options)
    handler = signal.getsignal(signal.SIGTERM)
    tic = time.monotonic()
    assert workers.run_workers(make_app, _settings(0), 2) == 1
    assert time.monotonic() - tic < 120  # the other worker does not wait at the barrier forever
    assert "while starting; stopping the service" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is handler  # the test process's handlers are back


def _server_pids(port: int) -> dict[int, int]:
    """Established connections to `port` per process that holds them (from /proc)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, inode = fields[1], fields[3], fields[9]
        if state == "01" and int(local.split(":")[1], 16) == port:  # 01: ESTABLISHED
            inodes.add(inode)
    counts: dict[int, int] = {}
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            links = [os.readlink(fd) for fd in fd_dir.iterdir()]
        except OSError:  # a process that ended, or another user's
            continue
        held = sum(
            1 for link in links if re.fullmatch(r"socket:\[(\d+)\]", link) and link[8:-1] in inodes
        )
        if held:
            counts[int(fd_dir.parent.name)] = held
    return counts


def test_connections_spread_over_the_workers_and_a_dead_worker_is_replaced(tmp_path):
    package = tmp_path / "pkg"
    subprocess.run(  # a small real package: an untrained MLP is enough to serve
        [sys.executable, "-c", _PACKAGE_SCRIPT, str(package)], check=True, timeout=120
    )
    with serve.running_server(package, workers=2, backend="eager") as url:
        port = int(url.rsplit(":", 1)[1])
        spread = _connected_pids(url, port)  # 16 keep-alive connections at once
        assert len(spread) == 2 and sum(spread.values()) == 16, spread  # 2 in 2**15 would fail

        os.kill(min(spread), signal.SIGKILL)
        deadline = time.monotonic() + 60
        while not set(_connected_pids(url, port)) - set(spread):  # a new worker serves
            assert time.monotonic() < deadline, "no worker took the killed one's place"
            time.sleep(1)


def _connected_pids(url: str, port: int) -> dict[int, int]:
    """Open 16 connections, one /health each; the server processes holding them."""
    clients = [httpx.Client(base_url=url) for _ in range(16)]
    try:
        for client in clients:
            client.get("/health")
        return _server_pids(port)
    except httpx.HTTPError:  # the killed worker's connections, before it is replaced
        return {}
    finally:
        for client in clients:
            client.close()


_PACKAGE_SCRIPT = """
import sys
from pathlib import Path
import dlbook as dl
from dlbook.package import model_card, save_package
model = dl.build_model("mlp", hidden=16)
recipe = dl.Recipe("mlp", {"hidden": 16}, num_epochs=1, batch_size=128)
save_package(Path(sys.argv[1]), model, model_card(model, recipe, {"test_acc": 0.1}, "0.1.0"))
"""
