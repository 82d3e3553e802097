"""The guest pages a plugin's sandboxes write, learned from its first streams, so that a fresh
VM is given its own copy of them before its guest runs (Machine.prefault).

Every connection's first event would otherwise fault each of those pages in the guest, which
a shadow-paging KVM handles slowly; prefaulting in the host costs a fraction of that, off the
event's path (when a VM is made or reset). Isolation is unchanged: a prefaulted page is a copy
of the sealed snapshot.
"""

from __future__ import annotations

import errno
import logging

from vmm.kvm.machine import Machine

log = logging.getLogger(__name__)
LEARNING_STREAMS = 16


class WorkingSet:
    def __init__(self, learning_streams: int = LEARNING_STREAMS) -> None:
        self.pages: set[int] = set()
        self._runs: list[tuple[int, int]] = []  # (first page, count)
        self._left = learning_streams

    def learn_from(self, machine: Machine) -> None:
        """Add the pages `machine`'s guest wrote, while still learning."""
        if self._left <= 0:
            return
        self._left -= 1
        written = machine.written_pages()
        if not written <= self.pages:
            self.pages |= written
            self._runs = _runs(self.pages)

    def prefault(self, machine: Machine) -> None:
        try:
            machine.prefault(self._runs)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            log.info("this kernel cannot prefault guest pages (MADV_POPULATE_WRITE); each "
                     "stream's first event faults them in instead")
            self._runs, self._left = [], 0


def _runs(pages: set[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for page in sorted(pages):
        if runs and runs[-1][0] + runs[-1][1] == page:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((page, 1))
    return runs
