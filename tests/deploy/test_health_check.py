"""`hyperfilter health`, what the image's HEALTHCHECK and the Kubernetes probes run, against a
real `hyperfilter serve`: SERVING from every worker is exit 0; a worker that does not answer,
is gone, or is not a sidecar is exit 1, within the timeout, and the line says which."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import plugin_dir

HYPERFILTER = str(Path(sys.executable).parent / "hyperfilter")
START_SECONDS = 120.0


def health(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HYPERFILTER, "health", *args], capture_output=True, text=True,
                          timeout=60, check=False, env={**os.environ, **(env or {})})


@contextlib.contextmanager
def serve(config: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`hyperfilter serve`, until every worker listens; SIGINT at the end."""
    with log.open("wb") as out:
        process = subprocess.Popen([HYPERFILTER, "serve", "--config", str(config)], stderr=out)
    try:
        deadline = time.monotonic() + START_SECONDS
        while "listening on" not in log.read_text():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=30)


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """Short enough for a Unix socket's path (108 bytes), unlike pytest's tmp_path."""
    with tempfile.TemporaryDirectory(prefix="hf-health-") as directory:
        yield Path(directory)


def write_config(directory: Path, listen: str, workers: int, cache: Path) -> Path:
    config = directory / "sidecar.toml"
    config.write_text(f'listen = "{listen}"\nworkers = {workers}\ncache-dir = "{cache}"\n'
                      f'[plugins]\npass-through = "{plugin_dir("pass-through")}"\n')
    return config


def test_every_worker_serving_is_healthy_and_a_stopped_sidecar_is_not(
        socket_dir: Path, compile_cache: Path) -> None:
    config = write_config(socket_dir, f"unix:{socket_dir}/sidecar.sock", 2, compile_cache)
    workers = [f"unix:{socket_dir}/sidecar.sock.{i}" for i in range(2)]
    with serve(config, socket_dir / "serve.log") as process:
        answer = health("--address", workers[0], "--address", workers[1])
        assert answer.returncode == 0, answer.stdout + answer.stderr
        assert answer.stdout == f"healthy: {workers[0]}: SERVING; {workers[1]}: SERVING\n"
        # The image's HEALTHCHECK names no address: they come from the environment.
        from_env = health(env={"HYPERFILTER_HEALTH_ADDRESS": " ".join(workers)})
        assert (from_env.returncode, from_env.stdout) == (0, answer.stdout)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    gone = health("--address", workers[0], "--timeout", "1")
    assert gone.returncode == 1
    assert gone.stdout.startswith(f"unhealthy: {workers[0]}: UNAVAILABLE: ")


def test_a_sidecar_on_tcp_is_asked_over_tcp(socket_dir: Path, compile_cache: Path) -> None:
    config = write_config(socket_dir, "127.0.0.1:0", 1, compile_cache)
    with serve(config, socket_dir / "serve.log"):
        log = (socket_dir / "serve.log").read_text()
        found = re.search(r"listening on (127\.0\.0\.1:\d+)", log)
        assert found
        answer = health("--address", found.group(1))
        assert (answer.returncode, answer.stdout) == (0, f"healthy: {found.group(1)}: SERVING\n")


def test_a_socket_that_never_answers_is_unhealthy_within_the_timeout(socket_dir: Path) -> None:
    with socket.socket(socket.AF_UNIX) as silent:  # listens, never accepts nor answers
        silent.bind(str(socket_dir / "silent.sock"))
        silent.listen()
        address = f"unix:{socket_dir}/silent.sock"
        start = time.monotonic()
        answer = health("--address", address, "--timeout", "0.5")
        assert answer.returncode == 1
        assert answer.stdout.startswith(f"unhealthy: {address}: DEADLINE_EXCEEDED")
        assert time.monotonic() - start < 10  # the command's start-up, then half a second


def test_one_bad_address_makes_the_whole_check_unhealthy(socket_dir: Path) -> None:
    answer = health("--address", "not-an-address", "--address", f"unix:{socket_dir}/none")
    assert answer.returncode == 1
    assert answer.stdout.startswith("unhealthy: not-an-address: 'not-an-address': expected "
                                    "HOST:PORT or unix:PATH; ")
