"""Sandboxes made ahead of time, so that a new stream does not wait for one.

A pooled sandbox has never run: it is exactly what `new_sandbox()` would return, made earlier.
Each is handed out once and never comes back, so isolation between streams is unchanged.
"""

from __future__ import annotations

import logging

from vmm.errors import SandboxFault
from vmm.sandbox import LoadedPlugin, Sandbox

log = logging.getLogger(__name__)


class SandboxPool:
    def __init__(self, plugin: LoadedPlugin, size: int) -> None:
        self.plugin = plugin
        self.size = size
        self._ready: list[Sandbox] = []

    def take(self) -> Sandbox:
        """A fresh sandbox: a pooled one, else one made now (whose fault then surfaces)."""
        return self._ready.pop() if self._ready else self.plugin.new_sandbox()

    def refill(self) -> None:
        """Make sandboxes up to the pool's size; called when nothing waits for the loop."""
        try:
            while len(self._ready) < self.size:
                self._ready.append(self.plugin.new_sandbox())
        except SandboxFault as fault:  # `take` will make one itself, and report it then
            log.warning("could not make a spare sandbox for %s: %s", self.plugin.name, fault)

    def close(self) -> None:
        for sandbox in self._ready:
            sandbox.close()
        self._ready.clear()
