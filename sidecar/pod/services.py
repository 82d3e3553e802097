"""The pod's processes, each started inside the pod's namespace with its output in a log file,
and stopped through its own process group (with whatever it started: the sidecar's workers)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from sidecar.pod.netns import Namespace

STOP_SECONDS = 10.0  # after the stop signal, before SIGKILL


class ServiceError(Exception):
    """A service did not start; the message ends with its log."""


class Service:
    def __init__(self, name: str, args: Sequence[str], namespace: Namespace,
                 log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                namespace.command(args), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)  # its own group, no Ctrl-C

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float, count: int = 1) -> list[re.Match[str]]:
        """The first `count` matches of `pattern` in the log, once there are that many."""
        deadline = time.monotonic() + timeout
        while True:
            found = list(re.finditer(pattern, self.log()))
            if len(found) >= count:
                return found[:count]
            if self.process.poll() is not None:
                raise ServiceError(f"{self.name} exited with {self.process.returncode}:\n"
                                   f"{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise ServiceError(f"{self.name}: no {pattern!r} after {timeout:g} s:\n"
                                   f"{self.log()[-3000:]}")
            time.sleep(0.05)

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """`sig` to the whole group, then SIGKILL to what is left of it past STOP_SECONDS."""
        group = self.process.pid  # start_new_session: the group's id is the leader's pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=STOP_SECONDS)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)  # the leader's children too
        self.process.wait()
