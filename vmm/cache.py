"""On-disk cache of compiled plugins, keyed by the plugin's content and the runtime's version,
so that a restarted sidecar does not compile again."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


class CompileCache:
    def __init__(self, directory: Path, runtime: str) -> None:
        self.directory = directory
        self.runtime = runtime
        self.hits = 0
        self.misses = 0

    def path_for(self, source: bytes, kind: str) -> Path:
        digest = hashlib.sha256(self.runtime.encode() + b"\0" + source).hexdigest()
        return self.directory / f"{digest}.{kind}"

    def load_or_compile(self, source: bytes, kind: str, compile: Callable[[], bytes],
                        load: Callable[[Path], T]) -> T:
        """`load` the cached artifact for `source`; on a miss (or an unreadable artifact),
        `compile` it, store it atomically, and load that."""
        path = self.path_for(source, kind)
        if path.exists():
            try:
                artifact = load(path)
                self.hits += 1
                return artifact
            except Exception as exc:  # noqa: BLE001 - a bad cache entry is rebuilt, not fatal
                log.warning("compile cache entry %s is unusable (%s); recompiling", path, exc)
        self.misses += 1
        data = compile()
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
        return load(path)
