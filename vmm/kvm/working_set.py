"""The guest pages a plugin's sandboxes write, learned from its first streams, so that a fresh
VM is given its own copy of them before its guest runs (Machine.restore), and a reset one
keeps its copies, the snapshot's bytes copied back into them (Machine.reset).

Every connection's first event would otherwise fault each of those pages in the guest, which
a shadow-paging KVM handles slowly; copying them in the host costs a fraction of that, off the
event's path (when a VM is made or reset). Isolation is unchanged: each is a copy of the sealed
snapshot.

What is copied stays in every idle VM, so it is capped per plugin, and only streams that
ended cleanly having written no more than the cap teach it: a stream that writes its whole
memory limit would otherwise make every later VM of the plugin, idle ones too, that big. The
pages most of the teaching streams wrote are kept.
"""

from __future__ import annotations

from collections import Counter

from vmm.kvm.layout import PAGE
from vmm.kvm.machine import Machine
from vmm.kvm.page_runs import Runs, pages_of, runs_of

LEARNING_STREAMS = 16  # streams looked at, taught or not: the look (a page scan) is the host's work
# Bytes copied into each VM at most: 128 MiB over 64 idle VMs. A Python component's stream
# writes about 1 MiB (http-auth: 235 pages); unlearned, its first event in each of 1,000 new
# VMs faulted them in the guest, and 5-15% passed its 50 ms CPU bound here (nested PVM).
MAX_WORKING_SET = 2 << 20
WORKING_SET_SHARE = 16  # nor more than this fraction of the plugin's memory limit


class WorkingSet:
    def __init__(self, memory_limit: int, learning_streams: int = LEARNING_STREAMS) -> None:
        self.max_pages = min(MAX_WORKING_SET, memory_limit // WORKING_SET_SHARE) // PAGE
        self.pages: set[int] = set()
        self._writers: Counter[int] = Counter()  # page -> how many teaching streams wrote it
        self.runs: Runs = []
        self._left = learning_streams

    def learn_from(self, machine: Machine) -> None:
        """Learn from the pages the guest of a cleanly finished stream wrote, while still
        learning, unless it wrote more than the cap."""
        if self._left <= 0:
            return
        self._left -= 1
        written = pages_of(machine.written_runs())
        if len(written) > self.max_pages:
            return
        self._writers.update(written)
        pages = {page for page, _ in self._writers.most_common(self.max_pages)}
        if pages != self.pages:
            self.pages = pages
            self.runs = runs_of(pages)
