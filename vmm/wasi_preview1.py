"""WASI preview 1 (`wasi_snapshot_preview1`) for core modules: every function a toolchain's
runtime may import (Go's wasip1 imports ten of them), and what each one answers. One table,
used by the core-module check at load (vmm/core_module.py: a function not in it, or of another
type, is refused, naming it), by the wasmtime tier's linker and by the kvm tier's host exits.

The answers grant nothing, as the WASI given to components does (vmm/kvm/wasi_glue.py):
no files or directories (no descriptor but stdio is open, none is preopened: BADF), no sockets,
empty arguments and environment, an empty stdin; stdout and stderr go to the plugin's log at
its rate, line by line. Clocks (wall and monotonic) and random bytes are the host's, for every
plugin, as components get them. Nothing blocks: `poll_oneoff` answers at once, its clock
subscriptions as if their time had come. `proc_exit` ends the sandbox, not the process.

A reactor (`_initialize` exported: Go's `-buildmode=c-shared`) is initialised once per
instance, before any other call; a command (`_start` without `_initialize`) is refused: a
plugin is called, it does not run.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from vmm.canonical import Memory
from vmm.capabilities import CapabilityDenied, OutputLines, PluginLog
from vmm.fault_notes import PluginStderr

WASI_MODULE = "wasi_snapshot_preview1"
INITIALIZE = "_initialize"  # a reactor's initialisation: () -> ()
COMMAND_START = "_start"

# errno values of the WASI preview 1 ABI.
SUCCESS, BADF, INVAL, NOSYS = 0, 8, 28, 52
STDIN, STDOUT, STDERR = 0, 1, 2
LOG_INFO, LOG_WARN = 1, 2  # the log capability's levels for stdout and stderr
FIRST_LINE_KEPT = 200  # bytes of an event's first line on stderr that its fault quotes
# Host work one call may ask for, bounded so that it stays within the event's CPU time: the
# bytes one fd_write passes to the log (the rest is a short write, as POSIX allows; Go's
# writers go on with it), the subscriptions of one poll_oneoff (Go's runtime makes one), the
# random bytes one random_get may ask for (more is INVAL: 256 MiB in one call had the host
# make random bytes for a second against a cpu-ms of 5; Go's runtime asks for a few at a time).
MAX_WRITE = 64 << 10
MAX_IOVECS = 1024  # vectors in one fd_write (Linux's IOV_MAX)
MAX_SUBSCRIPTIONS = 64
MAX_RANDOM = 64 << 10

_MASK = {"i32": 0xFFFFFFFF, "i64": 0xFFFFFFFFFFFFFFFF}
_U32, _U64 = struct.Struct("<I"), struct.Struct("<Q")
_IOVEC = struct.Struct("<II")  # buf pointer, length
# fdstat: filetype u8 @0, flags u16 @2, rights base u64 @8, rights inheriting u64 @16.
_FDSTAT = struct.Struct("<BxH4xQQ")
_CHARACTER_DEVICE = 2
_RIGHT_FD_READ, _RIGHT_FD_WRITE = 1 << 1, 1 << 6
CLOCKS: dict[int, Callable[[], int]] = {0: time.time_ns, 1: time.monotonic_ns}  # wall, monotonic
# poll_oneoff: a subscription is 48 bytes (userdata u64 @0, tag u8 @8, ...), an event 32
# (userdata u64 @0, error u16 @8, type u8 @10, ...); tag 0 is a clock, 1 and 2 an fd.
_SUBSCRIPTION, _EVENT = 48, 32
_EVENT_HEAD = struct.Struct("<QHB")
_EVENT_CLOCK = 0


class ProcExit(CapabilityDenied):
    """The plugin called proc_exit: its sandbox ends (a plugin cannot end the sidecar)."""


class WasiStreams:
    """One sandbox's stdout and stderr, cut into lines for the plugin's log. The first line an
    event writes to stderr is kept for its fault to quote (Go writes a panic's message there,
    then a traceback with the plugin's files and lines, which the log gets). A component's
    stderr may carry its SDK's fault notes instead (`notes`: vmm/fault_notes.py)."""

    def __init__(self, log: PluginLog, notes: PluginStderr | None = None) -> None:
        self.stdout = OutputLines(log, LOG_INFO)
        self._stderr = OutputLines(log, LOG_WARN)
        self.notes = notes
        self._first_error = b""
        self._first_error_done = False

    def start_event(self) -> None:
        self._first_error, self._first_error_done = b"", False
        if self.notes is not None:
            self.notes.begin_event()

    def write_stderr(self, data: bytes) -> None:
        if self.notes is not None:
            self.notes.write(data)
            return
        if not self._first_error_done:
            line, newline, _ = (self._first_error + data[:FIRST_LINE_KEPT]).partition(b"\n")
            self._first_error = line[:FIRST_LINE_KEPT]
            self._first_error_done = bool(newline) or len(line) >= FIRST_LINE_KEPT
        self._stderr.write(data)

    def explain(self, message: str) -> str:
        """A fault's message, and what the event wrote to stderr first, if anything."""
        said = self._first_error.decode("utf-8", "replace").strip()
        return f"{message.rstrip()}; it wrote to stderr: {said!r}" if said else message


WasiServe = Callable[[WasiStreams, Memory, list[int]], int | None]


@dataclass(frozen=True)
class WasiFunction:
    """A WASI preview 1 function: its core type and how the host answers it. `serve` gets
    the arguments as unsigned integers."""

    name: str
    params: tuple[str, ...]
    results: tuple[str, ...]
    serve: WasiServe
    module: str = WASI_MODULE  # the import module: WASI preview 1's, or the kvm guest's own

    def call(self, streams: WasiStreams, memory: Memory, args: list[int]) -> int | None:
        return self.serve(streams, memory, [value & _MASK[kind]
                                            for kind, value in zip(self.params, args,
                                                                   strict=True)])

    def host_call(self, streams: Callable[[], WasiStreams]
                  ) -> Callable[[Memory, list[int]], int | None]:
        """The function as a tier calls its host functions; `streams` tells whose stdout and
        stderr a call writes to."""
        return lambda memory, args: self.call(streams(), memory, args)


# ---- the answers ----------------------------------------------------------------------------


def _answer(errno: int) -> WasiServe:
    def serve(_streams: WasiStreams, _memory: Memory, _args: list[int]) -> int:
        return errno
    return serve


def _no_entries(_streams: WasiStreams, memory: Memory, args: list[int]) -> int:
    """args_sizes_get, environ_sizes_get: none, taking no bytes."""
    count_ptr, size_ptr = args
    memory.write(count_ptr, _U32.pack(0))
    memory.write(size_ptr, _U32.pack(0))
    return SUCCESS


def _clock_res_get(_streams: WasiStreams, memory: Memory, args: list[int]) -> int:
    clock, out = args
    if clock not in CLOCKS:
        return INVAL
    memory.write(out, _U64.pack(1))  # nanoseconds
    return SUCCESS


def _clock_time_get(_streams: WasiStreams, memory: Memory, args: list[int]) -> int:
    clock, _precision, out = args
    read = CLOCKS.get(clock)
    if read is None:
        return INVAL
    memory.write(out, _U64.pack(read()))
    return SUCCESS


def _random_get(_streams: WasiStreams, memory: Memory, args: list[int]) -> int:
    buffer, length = args
    if length > MAX_RANDOM:
        return INVAL
    memory.write(buffer, os.urandom(length))
    return SUCCESS


def _gather(memory: Memory, iovs: int, count: int) -> bytes:
    """The bytes the vectors name, up to MAX_WRITE."""
    pieces, room = [], MAX_WRITE
    for ptr, length in _IOVEC.iter_unpack(memory.read(iovs, count * _IOVEC.size)):
        if not room:
            break
        pieces.append(memory.read(ptr, min(length, room)))
        room -= len(pieces[-1])
    return b"".join(pieces)


def _fd_write(streams: WasiStreams, memory: Memory, args: list[int]) -> int:
    fd, iovs, count, written_ptr = args
    if fd not in (STDOUT, STDERR):
        return BADF
    if count > MAX_IOVECS:
        return INVAL
    data = _gather(memory, iovs, count)
    if fd == STDOUT:
        streams.stdout.write(data)
    else:
        streams.write_stderr(data)
    memory.write(written_ptr, _U32.pack(len(data)))
    return SUCCESS


def _fd_read(_streams: WasiStreams, memory: Memory, args: list[int]) -> int:
    fd, _iovs, _count, read_ptr = args
    if fd != STDIN:
        return BADF
    memory.write(read_ptr, _U32.pack(0))  # stdin is empty: end of file
    return SUCCESS


def _fd_fdstat_get(_streams: WasiStreams, memory: Memory, args: list[int]) -> int:
    fd, out = args
    if fd not in (STDIN, STDOUT, STDERR):
        return BADF
    rights = _RIGHT_FD_READ if fd == STDIN else _RIGHT_FD_WRITE
    memory.write(out, _FDSTAT.pack(_CHARACTER_DEVICE, 0, rights, 0))
    return SUCCESS


def _poll_oneoff(_streams: WasiStreams, memory: Memory, args: list[int]) -> int:
    """Every subscription fires now: a clock as if its time had passed (a sandbox never
    sleeps; a plugin waiting on the clock spins until its CPU time runs out), a descriptor
    with BADF."""
    subscriptions, events, count, count_ptr = args
    if not 0 < count <= MAX_SUBSCRIPTIONS:
        return INVAL
    given = memory.read(subscriptions, count * _SUBSCRIPTION)
    answers = bytearray(count * _EVENT)
    for i in range(count):
        userdata, tag = struct.unpack_from("<QB", given, i * _SUBSCRIPTION)
        _EVENT_HEAD.pack_into(answers, i * _EVENT, userdata,
                              SUCCESS if tag == _EVENT_CLOCK else BADF, tag)
    memory.write(events, bytes(answers))
    memory.write(count_ptr, _U32.pack(count))
    return SUCCESS


def _proc_exit(streams: WasiStreams, _memory: Memory, args: list[int]) -> None:
    raise ProcExit(streams.explain(f"it called WASI proc_exit({args[0]}), which ends its "
                                   "sandbox"))


# ---- the table ------------------------------------------------------------------------------


def _function(name: str, params: str, serve: WasiServe, results: str = "i32") -> WasiFunction:
    return WasiFunction(name, tuple(params.split()), tuple(results.split()), serve)


_DENIED = _answer(BADF)  # every descriptor but stdio is closed, no directory is preopened

FUNCTIONS: dict[str, WasiFunction] = {f.name: f for f in (
    _function("args_get", "i32 i32", _answer(SUCCESS)),
    _function("args_sizes_get", "i32 i32", _no_entries),
    _function("environ_get", "i32 i32", _answer(SUCCESS)),
    _function("environ_sizes_get", "i32 i32", _no_entries),
    _function("clock_res_get", "i32 i32", _clock_res_get),
    _function("clock_time_get", "i32 i64 i32", _clock_time_get),
    _function("fd_advise", "i32 i64 i64 i32", _DENIED),
    _function("fd_allocate", "i32 i64 i64", _DENIED),
    _function("fd_close", "i32", _DENIED),
    _function("fd_datasync", "i32", _DENIED),
    _function("fd_fdstat_get", "i32 i32", _fd_fdstat_get),
    _function("fd_fdstat_set_flags", "i32 i32", _DENIED),
    _function("fd_fdstat_set_rights", "i32 i64 i64", _DENIED),
    _function("fd_filestat_get", "i32 i32", _DENIED),
    _function("fd_filestat_set_size", "i32 i64", _DENIED),
    _function("fd_filestat_set_times", "i32 i64 i64 i32", _DENIED),
    _function("fd_pread", "i32 i32 i32 i64 i32", _DENIED),
    _function("fd_prestat_get", "i32 i32", _DENIED),
    _function("fd_prestat_dir_name", "i32 i32 i32", _DENIED),
    _function("fd_pwrite", "i32 i32 i32 i64 i32", _DENIED),
    _function("fd_read", "i32 i32 i32 i32", _fd_read),
    _function("fd_readdir", "i32 i32 i32 i64 i32", _DENIED),
    _function("fd_renumber", "i32 i32", _DENIED),
    _function("fd_seek", "i32 i64 i32 i32", _DENIED),
    _function("fd_sync", "i32", _DENIED),
    _function("fd_tell", "i32 i32", _DENIED),
    _function("fd_write", "i32 i32 i32 i32", _fd_write),
    _function("path_create_directory", "i32 i32 i32", _DENIED),
    _function("path_filestat_get", "i32 i32 i32 i32 i32", _DENIED),
    _function("path_filestat_set_times", "i32 i32 i32 i32 i64 i64 i32", _DENIED),
    _function("path_link", "i32 i32 i32 i32 i32 i32 i32", _DENIED),
    _function("path_open", "i32 i32 i32 i32 i32 i64 i64 i32 i32", _DENIED),
    _function("path_readlink", "i32 i32 i32 i32 i32 i32", _DENIED),
    _function("path_remove_directory", "i32 i32 i32", _DENIED),
    _function("path_rename", "i32 i32 i32 i32 i32 i32", _DENIED),
    _function("path_symlink", "i32 i32 i32 i32 i32", _DENIED),
    _function("path_unlink_file", "i32 i32 i32", _DENIED),
    _function("poll_oneoff", "i32 i32 i32 i32", _poll_oneoff),
    _function("proc_exit", "i32", _proc_exit, results=""),
    _function("proc_raise", "i32", _answer(NOSYS)),
    _function("sched_yield", "", _answer(SUCCESS)),
    _function("random_get", "i32 i32", _random_get),
    _function("sock_accept", "i32 i32 i32", _DENIED),
    _function("sock_recv", "i32 i32 i32 i32 i32 i32", _DENIED),
    _function("sock_send", "i32 i32 i32 i32 i32", _DENIED),
    _function("sock_shutdown", "i32 i32", _DENIED),
)}
