"""The host functions behind the WASI preview 2 a component gets inside the kvm guest
(vmm/kvm/wasi_glue.py): what the guest cannot answer itself. The clocks and random bytes are
the host's, as the wasmtime tier gives them; stdout and stderr go to the plugin's log at its
rate, as WASI preview 1's fd_write does. Random bytes and exit are preview 1's own functions
(`random_get`, `proc_exit`), which the guest calls with the same meaning.
"""

from __future__ import annotations

import os
import struct

from vmm.canonical import Memory
from vmm.wasi_preview1 import (
    BADF,
    CLOCKS,
    FUNCTIONS,
    INVAL,
    MAX_WRITE,
    STDERR,
    STDOUT,
    SUCCESS,
    WasiFunction,
    WasiStreams,
)

MODULE = "hyperfilter:guest-wasi"
_U64 = struct.Struct("<Q")


def _clock_now(_streams: WasiStreams, _memory: Memory, args: list[int]) -> int:
    read = CLOCKS.get(args[0])
    return 0 if read is None else read()


def _random_u64(_streams: WasiStreams, _memory: Memory, _args: list[int]) -> int:
    return int(_U64.unpack(os.urandom(8))[0])


def _write(streams: WasiStreams, memory: Memory, args: list[int]) -> int:
    """Bytes the guest's stdout or stderr stream was given, at most MAX_WRITE (the most its
    check-write allows)."""
    fd, ptr, length = args
    if length > MAX_WRITE:
        return INVAL
    data = memory.read(ptr, length)
    if fd == STDOUT:
        streams.stdout.write(data)
    elif fd == STDERR:
        streams.write_stderr(data)
    else:
        return BADF
    return SUCCESS


SERVICES: dict[str, WasiFunction] = {f.name: f for f in (
    WasiFunction("clock-now", ("i32",), ("i64",), _clock_now, MODULE),
    WasiFunction("random-u64", (), ("i64",), _random_u64, MODULE),
    WasiFunction("write", ("i32", "i32", "i32"), ("i32",), _write, MODULE),
)}
RANDOM_GET, PROC_EXIT = FUNCTIONS["random_get"], FUNCTIONS["proc_exit"]
