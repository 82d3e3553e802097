"""On-disk cache of compiled plugins, keyed by the plugin's content and the runtime's version,
so that a restarted sidecar does not compile again.

Every build of a plugin is a new entry (a componentize-py component compiles to about 40 MB),
so the cache is bounded: past MAX_BYTES, the entries used least recently go. An entry's
modification time is when it was last used (a hit touches it); several processes may share
the directory, and an entry one of them removes is only compiled again by the next that needs
it (one already loaded stays valid: its file is mapped or read)."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)

# The most the cache's entries take on disk together: a few dozen component builds.
MAX_BYTES = 1 << 30
_PARTIAL = ".tmp-"  # an entry being written


class CompileCache:
    def __init__(self, directory: Path, runtime: str, max_bytes: int = MAX_BYTES) -> None:
        self.directory = directory
        self.runtime = runtime
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0

    def path_for(self, source: bytes, kind: str) -> Path:
        digest = hashlib.sha256(self.runtime.encode() + b"\0" + source).hexdigest()
        return self.directory / f"{digest}.{kind}"

    def load_or_compile(self, source: bytes, kind: str, compile: Callable[[], bytes],
                        load: Callable[[Path], T], what: str = "a plugin") -> T:
        """`load` the cached artifact for `source`; on a miss (or an unreadable artifact),
        `compile` it (saying so in the log: `what` is being compiled, and how long it took),
        store it atomically, and load that."""
        path = self.path_for(source, kind)
        if path.exists():
            try:
                artifact = load(path)
                self.hits += 1
                with contextlib.suppress(OSError):  # evicted meanwhile: loaded all the same
                    os.utime(path)
                return artifact
            except Exception as exc:  # noqa: BLE001 - a bad cache entry is rebuilt, not fatal
                log.warning("compile cache entry %s is unusable (%s); recompiling", path, exc)
        self.misses += 1
        log.info("compiling %s: %s KiB, once per build (then it loads from the cache in %s)",
                 what, f"{len(source) >> 10:,}", self.directory)
        started = time.monotonic()
        data = compile()
        log.info("compiled %s in %.1f s", what, time.monotonic() - started)
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=_PARTIAL)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
        self.evict(keep=path)
        return load(path)

    def evict(self, keep: Path | None = None) -> None:
        """Remove the least recently used entries until the rest fit in `max_bytes`; `keep`
        (the entry just stored) stays, even alone above the bound."""
        entries = []
        for entry in self.directory.iterdir():
            if entry.name.startswith(_PARTIAL):
                continue
            with contextlib.suppress(OSError):  # removed by another process meanwhile
                status = entry.stat()
                entries.append((status.st_mtime, status.st_size, entry))
        total = sum(size for _, size, _ in entries)
        removed = freed = 0
        for _, size, entry in sorted(entries):
            if total <= self.max_bytes:
                break
            if entry == keep:
                continue
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
            total -= size
            removed += 1
            freed += size
        if removed:
            log.info("compile cache %s: removed the %d least recently used entries (%s MiB) to "
                     "stay within %s MiB", self.directory, removed, f"{freed >> 20:,}",
                     f"{self.max_bytes >> 20:,}")
