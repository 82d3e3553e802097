"""What happens when a plugin's hook fails: an exception, or a verdict the world cannot carry.

Left alone, componentize-py's runtime panics with neither the cause nor a line number. Instead
the SDK writes to stderr a fault note, one line saying why, then the Python traceback, and
exits. The sidecar (vmm/fault_notes.py) makes the note the message of the event's fault,
and note and traceback one message in the plugin's log (at the plugin's log rate, `log` grant
or not): the event fails under the plugin's failure policy, the sandbox is gone, and the next
stream gets a fresh one.

Paths are the plugin's own: componentize-py puts each source directory at /0, /1, ..., which
is cut off, and the sources are read into the traceback module's line cache at build time (the
files are there then, not in the sandbox), so that tracebacks show the failing lines.
"""

from __future__ import annotations

import functools
import linecache
import os
import re
import sys
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

from hyperfilter_verdicts import VerdictError

FAULT_NOTE = b"hyperfilter-fault: "  # vmm/fault_notes.py's FAULT_NOTE
SDK_DIR = os.path.dirname(os.path.abspath(__file__))
MOUNT = re.compile(r"/\d+/")  # where componentize-py puts a source directory
FRAME_IN_MOUNT = re.compile(rf'^(\s*File "){MOUNT.pattern}')
MAX_TRACE_LINES = 40
MAX_CAUSE = 300
MAX_SOURCE_BYTES = 1 << 20

Hook = Callable[..., Any]


def guard_hooks(cls: type, checks: dict[str, Callable[[object], Any]]) -> None:
    """Wrap each hook `cls` defines itself: its verdict checked by `checks[name]`."""
    for name, check in checks.items():
        hook = cls.__dict__.get(name)
        if callable(hook):
            setattr(cls, name, _guarded(name, hook, check))


def _guarded(name: str, hook: Hook, check: Callable[[object], Any]) -> Hook:
    @functools.wraps(hook)
    def run(self: object, *args: object) -> Any:
        try:
            value = hook(self, *args)
        except BaseException as error:  # noqa: BLE001 - anything else panics the runtime
            _raised(name, error)
        try:
            return check(value)
        except VerdictError as error:
            _returned(name, error, hook)

    return run


def _raised(name: str, error: BaseException) -> NoReturn:
    _fail(lambda: _raise_cause(name, error), lambda: _traceback(error))


def _returned(name: str, error: VerdictError, hook: Hook) -> NoReturn:
    _fail(lambda: f"{name} returned {error}{_defined_at(hook)}", lambda: [])


def _fail(cause: Callable[[], str], trace: Callable[[], list[str]]) -> NoReturn:
    """Report and exit. The cause goes first, in one write: a report that cannot be finished
    (no memory left) has said why."""
    try:
        sys.stderr.flush()  # what the plugin wrote before stays before the report
        note = " ".join(cause().split())[:MAX_CAUSE]
    except BaseException:  # noqa: BLE001
        note = "the plugin failed and its error could not be reported"
    os.write(2, FAULT_NOTE + note.encode() + b"\n")
    try:
        lines = trace()
        if len(lines) > MAX_TRACE_LINES:
            lines = [lines[0], "  ...", *lines[1 - MAX_TRACE_LINES:]]
        sys.stderr.write("".join(f"{line}\n" for line in lines))
        sys.stderr.flush()
    finally:
        os._exit(1)


def _own(filename: str) -> bool:
    """Whether `filename` is one of the plugin's sources (not the SDK's, not the stdlib's)."""
    return MOUNT.match(filename) is not None and not filename.startswith(SDK_DIR + "/")


def _shown_path(filename: str) -> str:
    return MOUNT.sub("", filename, count=1) if MOUNT.match(filename) else filename


def _raise_cause(name: str, error: BaseException) -> str:
    own = [entry for entry in traceback.extract_tb(error.__traceback__) if _own(entry.filename)]
    where = f" ({_shown_path(own[-1].filename)}, line {own[-1].lineno})" if own else ""
    text = str(error).strip()
    message = text.splitlines()[0] if text else ""
    if isinstance(error, VerdictError):  # from an SDK helper: the line is the plugin's call
        return f"{name}: {message}{where}"
    kind = type(error).__name__
    return f"{name} raised {kind}: {message}{where}" if message else f"{name} raised {kind}{where}"


def _traceback(error: BaseException) -> list[str]:
    """Python's traceback of `error`, without the SDK's frames, in the plugin's paths."""
    report = traceback.TracebackException.from_exception(error)
    report.stack = traceback.StackSummary.from_list(
        [entry for entry in report.stack if not entry.filename.startswith(SDK_DIR + "/")])
    text = "".join(report.format())
    return [FRAME_IN_MOUNT.sub(r"\1", line) for line in text.splitlines()]


def _defined_at(hook: Hook) -> str:
    code = getattr(hook, "__code__", None)
    if code is None:
        return ""
    return f" ({_shown_path(code.co_filename)}, line {code.co_firstlineno})"


def keep_sources() -> None:
    """Read the plugin's sources into the line cache, with no modification time: the cache
    then keeps them though the files are gone at run time. Run at build time, at import."""
    budget = MAX_SOURCE_BYTES
    for entry in sys.path:
        if not MOUNT.fullmatch(entry + "/") or entry == SDK_DIR:
            continue
        for root, dirs, files in os.walk(entry):
            dirs[:] = [d for d in dirs if d != "__pycache__" and not d.startswith(".")]
            for path in (os.path.join(root, f) for f in files if f.endswith(".py")):
                try:
                    with open(path, encoding="utf-8") as source:
                        text = source.read(budget + 1)
                except (OSError, UnicodeDecodeError):
                    continue
                budget -= len(text)
                if budget < 0:
                    return
                linecache.cache[path] = (len(text), None, text.splitlines(True), path)
