"""The pod's network: two network namespaces joined by a veth pair, made with `ip netns`.

`pod` holds Envoy, the sidecar, Redis and the application; `client` is the outside world, which
reaches the pod only at its veth address. The names end in a suffix of this process's id and
random bytes, so that parallel runs and the leftovers of a killed one never clash. Processes
start inside a namespace through `ip netns exec`; this process's own sockets are made by
threads that entered one (`setns` moves only the calling thread).
"""

from __future__ import annotations

import ctypes
import os
import secrets
import shutil
import subprocess
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
NETNS_DIR = Path("/run/netns")  # where `ip netns add` mounts each namespace
CLONE_NEWNET = 0x40000000
IP_SECONDS = 10.0  # one `ip` command


class NetnsError(Exception):
    """An `ip` command failed; the message has its output."""


def ip(*args: str) -> None:
    try:
        result = subprocess.run(["ip", *args], capture_output=True, text=True,
                                timeout=IP_SECONDS, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetnsError(f"ip {' '.join(args)}: {exc}") from None
    if result.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {result.stderr.strip() or result.returncode}")


def unavailable() -> str | None:
    """Why this process cannot make the pod's network, or None when it can."""
    if os.geteuid() != 0:
        return "it needs root (it makes network namespaces and a veth pair with `ip netns`)"
    if shutil.which("ip") is None:
        return "no `ip` command (Debian: apt-get install iproute2)"
    probe = f"hf-probe-{os.getpid():x}{secrets.token_hex(2)}"
    try:
        ip("netns", "add", probe)
        ip("netns", "delete", probe)
    except NetnsError as exc:
        return f"`ip netns` does not work here: {exc}"
    return None


_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class Namespace:
    name: str

    @property
    def path(self) -> Path:
        return NETNS_DIR / self.name

    def command(self, args: Sequence[str]) -> list[str]:
        """`args` run inside this namespace (`ip netns exec` execs them: same process)."""
        return ["ip", "netns", "exec", self.name, *args]

    def enter(self) -> None:
        """Move the calling thread into this namespace, and check that it is there: a socket
        made outside would reach the addresses through the host's own network."""
        fd = os.open(self.path, os.O_RDONLY)
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                errno = ctypes.get_errno()
                raise OSError(errno, f"setns {self.name}: {os.strerror(errno)}")
        finally:
            os.close(fd)
        if os.stat("/proc/thread-self/ns/net").st_ino != os.stat(self.path).st_ino:
            raise OSError(f"this thread is not in network namespace {self.name}")

    def call(self, work: Callable[[], T]) -> T:
        """`work()` on a new thread inside this namespace; its result or its exception."""
        outcome: list[T] = []
        failure: list[BaseException] = []

        def inside() -> None:
            try:
                self.enter()
                outcome.append(work())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                failure.append(exc)

        thread = threading.Thread(target=inside, name=f"netns-{self.name}", daemon=True)
        thread.start()
        try:
            thread.join()
        except BaseException:
            thread.join()  # it may be starting a process: done before the caller tears down
            raise
        if failure:
            raise failure[0]
        return outcome[0]

    def threads(self, count: int) -> ThreadPoolExecutor:
        """A pool whose every thread is inside this namespace."""
        return ThreadPoolExecutor(count, thread_name_prefix=f"netns-{self.name}",
                                  initializer=self.enter)


@dataclass(frozen=True)
class PodNetwork:
    """`pod` at `pod_ip`, `client` at `client_ip`, on one /30 of a veth pair; both
    namespaces have their own loopback up."""

    pod: Namespace
    client: Namespace
    pod_ip: str = "10.77.0.1"
    client_ip: str = "10.77.0.2"
    prefix: int = 30

    @classmethod
    def unique(cls) -> PodNetwork:
        suffix = f"{os.getpid():x}{secrets.token_hex(2)}"
        return cls(Namespace(f"hf-pod-{suffix}"), Namespace(f"hf-client-{suffix}"))

    @property
    def veth(self) -> tuple[str, str]:
        """The pair's ends, one in each namespace (names made there, not in the host's)."""
        suffix = self.pod.name.removeprefix("hf-pod-")
        return f"hfp{suffix}"[:15], f"hfc{suffix}"[:15]  # IFNAMSIZ

    def create(self) -> None:
        """Everything made; what was made before a failure is deleted again."""
        try:
            pod_end, client_end = self.veth
            ip("netns", "add", self.pod.name)
            ip("netns", "add", self.client.name)
            ip("link", "add", pod_end, "netns", self.pod.name, "type", "veth",
               "peer", "name", client_end, "netns", self.client.name)
            for namespace, end, address in ((self.pod, pod_end, self.pod_ip),
                                            (self.client, client_end, self.client_ip)):
                ip("-n", namespace.name, "address", "add", f"{address}/{self.prefix}",
                   "dev", end)
                ip("-n", namespace.name, "link", "set", end, "up")
                ip("-n", namespace.name, "link", "set", "lo", "up")
        except BaseException:
            self.delete()
            raise

    def delete(self) -> None:
        """Both namespaces gone (the veth pair with them); those never made are skipped."""
        for namespace in (self.pod, self.client):
            if namespace.path.exists():
                ip("netns", "delete", namespace.name)
