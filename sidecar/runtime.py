"""What the workers of one sidecar share on this machine, in a directory of its own: the slow
lanes (sidecar/slow_lanes.py) and the `lmdb` shared-state file. Made when the sidecar starts,
passed to every worker as it is, removed when the sidecar exits; a sidecar that was killed
leaves its directory behind, and the next one to start removes it."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sidecar.config import SharedStateConfig
from sidecar.slow_lanes import SlowLanes
from vmm.capabilities.state import StateBackend
from vmm.capabilities.state.lmdb_store import LmdbBackend
from vmm.capabilities.state.memory import MemoryBackend

PREFIX = "hyperfilter-run-"  # then the creating process's id


@dataclass(frozen=True)
class Runtime:
    directory: Path
    lanes: SlowLanes

    @classmethod
    def create(cls, slow_plugin_cores: int) -> Runtime:
        _remove_orphans()
        directory = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))
        return cls(directory, SlowLanes.create(directory / "lanes", slow_plugin_cores))

    def state_backend(self, config: SharedStateConfig) -> StateBackend:
        """This process's handle on the store the configuration names."""
        if config.backend == "memory":
            return MemoryBackend()
        if config.backend == "redis":
            # Imported only here: redis-py takes over 100 ms to import.
            from vmm.capabilities.state.redis_store import RedisBackend

            assert config.url is not None  # the configuration requires it
            return RedisBackend(config.url, config.prefix, config.timeout_ms / 1000)
        return LmdbBackend(self.directory / "shared-state")

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def _remove_orphans() -> None:
    """The directories of sidecars that were killed before they could remove theirs."""
    for directory in Path(tempfile.gettempdir()).glob(f"{PREFIX}*-*"):
        pid = directory.name.removeprefix(PREFIX).partition("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(directory, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
