"""Running a language's toolchain: its own output on failure, a missing tool named with the
package that brings it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


class BuildError(Exception):
    """The plugin's sources did not build; the message has the toolchain's output."""


class ToolchainMissing(BuildError):
    """The language's toolchain is not installed here; the message names what brings it."""


def run(command: list[str], what: str, cwd: Path | None = None,
        env: dict[str, str] | None = None) -> None:
    """Run one toolchain step; BuildError with everything it printed when it fails."""
    result = subprocess.run(command, capture_output=True, text=True, check=False, cwd=cwd,
                            env=None if env is None else os.environ | env)
    if result.returncode != 0:
        raise BuildError(f"{what} failed:\n{result.stdout}{result.stderr}".rstrip())


def tool(name: str, package: str = "pip install 'hyperfilter[plugins]'") -> str:
    """A command of this Python environment or of PATH; BuildError naming `package` when it
    is missing."""
    found = shutil.which(name, path=f"{Path(sys.executable).parent}{os.pathsep}"
                                    f"{os.environ.get('PATH', '')}")
    if found is None:
        raise ToolchainMissing(f"{name} is not installed ({package})")
    return found
