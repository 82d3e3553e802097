"""The CPU bound of the KVM tier: a thread that kicks a vCPU out of KVM_RUN past its deadline.

KVM_RUN returns only on a VM exit or a signal. Every tick the watchdog looks at the machines
being run, and sends a signal to the thread running one past its deadline, so KVM_RUN returns
EINTR and `Machine.run` sees the deadline has passed. A kick that lands between two runs (the
host answering a host call) is repeated on the next tick, so none is lost; the watchdog never
touches a machine, which may be destroyed under it. The signal needs a handler (any: Python's
only notes it), and Python installs handlers only from the main thread:
`install_kick_handler()` must run there before a vCPU runs on another thread.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time

from vmm.kvm.machine import Machine

KICK_SIGNAL = signal.SIGRTMIN
TICK_SECONDS = 0.005


def _noted(_signum: int, _frame: object) -> None:
    """The kick has done its work by interrupting KVM_RUN."""


def install_kick_handler() -> None:
    signal.signal(KICK_SIGNAL, _noted)


def kick_handler_installed() -> bool:
    return signal.getsignal(KICK_SIGNAL) not in (signal.SIG_DFL, signal.SIG_IGN, None)


class Watchdog:
    def __init__(self, tick: float = TICK_SECONDS) -> None:
        self.tick = tick
        self._running: dict[int, Machine] = {}  # by the thread running it
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="kvm-watchdog", daemon=True)
        self._thread.start()

    def watch(self, machine: Machine, seconds: float) -> None:
        """`machine` runs on this thread from now for at most `seconds`."""
        machine.deadline = time.monotonic() + seconds
        self._running[threading.get_ident()] = machine

    def unwatch(self) -> None:
        self._running.pop(threading.get_ident(), None)

    def _watch(self) -> None:
        while not self._stop.wait(self.tick):
            now = time.monotonic()
            for thread, machine in list(self._running.items()):
                if now >= machine.deadline:
                    with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                        signal.pthread_kill(thread, KICK_SIGNAL)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
