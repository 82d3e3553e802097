"""The CPU bound of the KVM tier: each event may use `cpu-ms` of its thread's CPU time (the
guest in KVM_RUN and the host calls served for it alike, see vmm/cpu_clock.py).

`Machine.run` reads the thread's CPU clock before every entry into the guest, so a plugin
looping over host calls is stopped at the first one past its bound, by the thread itself,
whether or not anything else gets a core meanwhile. A guest that makes no exit has to be
interrupted: KVM_RUN returns only on an exit or a signal. Every tick this watchdog reads the
CPU clock of each thread running a machine, and signals one past its bound, so that KVM_RUN
returns EINTR and `Machine.run` looks at the clock again. A kick that interrupts nothing
(it landed while the host was serving a call, or just before KVM_RUN was entered) is repeated
on the next tick, and meanwhile the next entry looks at the clock anyway. The watchdog never
touches a machine, which may be destroyed under it.

The signal needs a handler (any: Python's only notes it), and Python installs handlers only
from the main thread: `install_kick_handler()` must run there before a vCPU runs on another
thread.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from typing import TYPE_CHECKING

from vmm.cpu_clock import cpu_seconds, thread_clock

if TYPE_CHECKING:
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
        # By the thread running a machine: its CPU clock, and the reading past which it stops.
        self._running: dict[int, tuple[int, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="kvm-watchdog", daemon=True)
        self._thread.start()

    def watch(self, machine: Machine, seconds: float) -> None:
        """`machine` runs on this thread from now for at most `seconds` of its CPU time."""
        native_id = threading.current_thread().native_id
        assert native_id is not None  # a running thread has one
        machine.cpu_until = until = time.thread_time() + seconds
        self._running[threading.get_ident()] = (thread_clock(native_id), until)

    def unwatch(self) -> None:
        self._running.pop(threading.get_ident(), None)

    def _watch(self) -> None:
        while not self._stop.wait(self.tick):
            for thread, (clock, until) in list(self._running.items()):
                used = cpu_seconds(clock)
                if used is not None and used >= until:
                    with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                        signal.pthread_kill(thread, KICK_SIGNAL)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
