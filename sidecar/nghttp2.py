"""libnghttp2's server session, driven from Python through cffi (ABI mode: the Debian shared
library `libnghttp2.so.14`, no compiler at install).

One `ServerSession` owns one `nghttp2_session *`; once closed, every call raises
`SessionClosed`. The library parses and checks every frame (framing, HPACK, stream states,
flow control, the HTTP messaging rules) and calls back into the session's `SessionEvents` for
what the layer above must know. Callbacks are made once per process; each finds its session
through the handle passed as nghttp2's `user_data`.

Output is zero-copy for data: the read callback only says how many bytes a DATA frame takes
(`NGHTTP2_DATA_FLAG_NO_COPY`), and the send-data callback hands the frame header and the
stream's own bytes to `SessionEvents.output`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

import cffi

log = logging.getLogger(__name__)
LIBRARY = "libnghttp2.so.14"
# nghttp2_option_set_stream_reset_rate_limit came with the fix for CVE-2023-44487 (upstream
# 1.57, Debian 1.52.0-1+deb12u1) and max_continuations with the one for CVE-2024-28182.
REQUIRED_SYMBOLS = ("nghttp2_option_set_stream_reset_rate_limit",
                    "nghttp2_option_set_max_continuations")

_DECLARATIONS = """
typedef struct nghttp2_session nghttp2_session;
typedef struct nghttp2_session_callbacks nghttp2_session_callbacks;
typedef struct nghttp2_option nghttp2_option;

typedef struct { const char *version_str; int version_num; const char *proto_str; int age; }
    nghttp2_info;
typedef struct { size_t length; int32_t stream_id; uint8_t type; uint8_t flags;
                 uint8_t reserved; } nghttp2_frame_hd;
typedef struct { int32_t stream_id; int32_t weight; uint8_t exclusive; } nghttp2_priority_spec;
typedef struct { uint8_t *name; uint8_t *value; size_t namelen; size_t valuelen;
                 uint8_t flags; } nghttp2_nv;
typedef struct { nghttp2_frame_hd hd; size_t padlen; nghttp2_priority_spec pri_spec;
                 nghttp2_nv *nva; size_t nvlen; int cat; } nghttp2_headers;
typedef struct { nghttp2_frame_hd hd; uint32_t error_code; } nghttp2_rst_stream;
typedef struct { nghttp2_frame_hd hd; int32_t last_stream_id; uint32_t error_code;
                 uint8_t *opaque_data; size_t opaque_data_len; uint8_t reserved; }
    nghttp2_goaway;
typedef union { nghttp2_frame_hd hd; nghttp2_headers headers; nghttp2_rst_stream rst_stream;
                nghttp2_goaway goaway; } nghttp2_frame;
typedef struct { int32_t settings_id; uint32_t value; } nghttp2_settings_entry;
typedef union { int fd; void *ptr; } nghttp2_data_source;
typedef ssize_t (*nghttp2_data_source_read_callback)(
    nghttp2_session *, int32_t, uint8_t *, size_t, uint32_t *, nghttp2_data_source *, void *);
typedef struct { nghttp2_data_source source; nghttp2_data_source_read_callback read_callback; }
    nghttp2_data_provider;

typedef ssize_t (*nghttp2_send_callback)(nghttp2_session *, const uint8_t *, size_t, int,
                                         void *);
typedef int (*nghttp2_send_data_callback)(nghttp2_session *, nghttp2_frame *, const uint8_t *,
                                          size_t, nghttp2_data_source *, void *);
typedef int (*nghttp2_on_frame_recv_callback)(nghttp2_session *, const nghttp2_frame *,
                                              void *);
typedef int (*nghttp2_on_data_chunk_recv_callback)(nghttp2_session *, uint8_t, int32_t,
                                                   const uint8_t *, size_t, void *);
typedef int (*nghttp2_on_stream_close_callback)(nghttp2_session *, int32_t, uint32_t, void *);
typedef int (*nghttp2_on_begin_headers_callback)(nghttp2_session *, const nghttp2_frame *,
                                                 void *);
typedef int (*nghttp2_on_header_callback)(nghttp2_session *, const nghttp2_frame *,
                                          const uint8_t *, size_t, const uint8_t *, size_t,
                                          uint8_t, void *);

nghttp2_info *nghttp2_version(int least_version);
const char *nghttp2_strerror(int lib_error_code);

int nghttp2_session_callbacks_new(nghttp2_session_callbacks **);
void nghttp2_session_callbacks_del(nghttp2_session_callbacks *);
void nghttp2_session_callbacks_set_send_callback(nghttp2_session_callbacks *,
                                                 nghttp2_send_callback);
void nghttp2_session_callbacks_set_send_data_callback(nghttp2_session_callbacks *,
                                                      nghttp2_send_data_callback);
void nghttp2_session_callbacks_set_on_frame_recv_callback(nghttp2_session_callbacks *,
                                                          nghttp2_on_frame_recv_callback);
void nghttp2_session_callbacks_set_on_data_chunk_recv_callback(
    nghttp2_session_callbacks *, nghttp2_on_data_chunk_recv_callback);
void nghttp2_session_callbacks_set_on_stream_close_callback(nghttp2_session_callbacks *,
                                                            nghttp2_on_stream_close_callback);
void nghttp2_session_callbacks_set_on_begin_headers_callback(
    nghttp2_session_callbacks *, nghttp2_on_begin_headers_callback);
void nghttp2_session_callbacks_set_on_header_callback(nghttp2_session_callbacks *,
                                                      nghttp2_on_header_callback);

int nghttp2_option_new(nghttp2_option **);
void nghttp2_option_del(nghttp2_option *);
void nghttp2_option_set_no_auto_window_update(nghttp2_option *, int);
void nghttp2_option_set_max_settings(nghttp2_option *, size_t);
void nghttp2_option_set_max_outbound_ack(nghttp2_option *, size_t);
void nghttp2_option_set_max_deflate_dynamic_table_size(nghttp2_option *, size_t);
void nghttp2_option_set_stream_reset_rate_limit(nghttp2_option *, uint64_t, uint64_t);
void nghttp2_option_set_max_continuations(nghttp2_option *, size_t);

int nghttp2_session_server_new2(nghttp2_session **, const nghttp2_session_callbacks *, void *,
                                const nghttp2_option *);
void nghttp2_session_del(nghttp2_session *);
ssize_t nghttp2_session_mem_recv(nghttp2_session *, const uint8_t *, size_t);
int nghttp2_session_send(nghttp2_session *);
int nghttp2_session_want_read(nghttp2_session *);
int nghttp2_session_want_write(nghttp2_session *);
int32_t nghttp2_session_get_last_proc_stream_id(nghttp2_session *);
int nghttp2_session_set_local_window_size(nghttp2_session *, uint8_t, int32_t, int32_t);
int nghttp2_session_consume_connection(nghttp2_session *, size_t);
int nghttp2_session_consume_stream(nghttp2_session *, int32_t, size_t);
int nghttp2_submit_settings(nghttp2_session *, uint8_t, const nghttp2_settings_entry *, size_t);
int nghttp2_submit_response(nghttp2_session *, int32_t, const nghttp2_nv *, size_t,
                            const nghttp2_data_provider *);
int32_t nghttp2_submit_headers(nghttp2_session *, uint8_t, int32_t, const nghttp2_priority_spec *,
                               const nghttp2_nv *, size_t, void *);
int nghttp2_submit_data(nghttp2_session *, uint8_t, int32_t, const nghttp2_data_provider *);
int nghttp2_submit_trailer(nghttp2_session *, int32_t, const nghttp2_nv *, size_t);
int nghttp2_submit_goaway(nghttp2_session *, uint8_t, int32_t, uint32_t, const uint8_t *,
                          size_t);
int nghttp2_submit_shutdown_notice(nghttp2_session *);
int nghttp2_session_terminate_session(nghttp2_session *, uint32_t);
"""

ffi = cffi.FFI()
ffi.cdef(_DECLARATIONS)

# Error codes and flags of nghttp2.h that this module uses.
ERR_TEMPORAL_CALLBACK_FAILURE = -521  # fails this stream only (RST_STREAM), not the session
ERR_PAUSE = -526  # from a header or data callback: mem_recv returns, the rest of the input waits
ERR_CALLBACK_FAILURE = -902
# What the peer did to end the session: floods (acknowledgements it does not read, too many
# CONTINUATION frames or SETTINGS entries) and everything else.
FLOOD_ERRORS = frozenset({-904, -905, -537})
DATA_FLAG_EOF, DATA_FLAG_NO_END_STREAM, DATA_FLAG_NO_COPY = 0x1, 0x2, 0x4
FRAME_DATA, FRAME_HEADERS, FRAME_GOAWAY = 0x0, 0x1, 0x7
FLAG_END_STREAM = 0x1
HCAT_REQUEST = 0
SETTINGS_HEADER_TABLE_SIZE, SETTINGS_ENABLE_PUSH, SETTINGS_MAX_CONCURRENT_STREAMS, \
    SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_FRAME_SIZE, SETTINGS_MAX_HEADER_LIST_SIZE = \
    range(1, 7)
NO_ERROR, PROTOCOL_ERROR, ENHANCE_YOUR_CALM = 0x0, 0x1, 0xB


_UNLIMITED = (1 << 64) - 1


class Nghttp2Error(Exception):
    """libnghttp2 refused a call, or cannot be used here; `code` is its error code (0 when
    the library itself is missing)."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


class SessionClosed(Nghttp2Error):
    """The session was used after `close()`."""


def _load() -> Any:
    try:
        lib = ffi.dlopen(LIBRARY)
    except OSError as error:
        raise Nghttp2Error(f"{LIBRARY} cannot be loaded ({error}); install Debian's "
                           "libnghttp2-14") from None
    for symbol in REQUIRED_SYMBOLS:
        try:
            getattr(lib, symbol)
        except AttributeError:
            found = ffi.string(lib.nghttp2_version(0).version_str).decode()
            raise Nghttp2Error(f"libnghttp2 {found} lacks {symbol}: it predates the fixes "
                               "for CVE-2023-44487 and CVE-2024-28182; upgrade it") from None
    return lib


lib = _load()


def version() -> str:
    return ffi.string(lib.nghttp2_version(0).version_str).decode()


def _check(result: int, call: str) -> int:
    if result < 0:
        raise Nghttp2Error(f"{call}: {ffi.string(lib.nghttp2_strerror(result)).decode()}",
                           result)
    return result


class HeaderList:
    """Header fields ready for nghttp2 (`nghttp2_nv[]`), made once and sent many times
    (nghttp2 copies them when they are submitted)."""

    __slots__ = ("_keep", "count", "fields", "nva")

    def __init__(self, fields: Sequence[tuple[bytes, bytes]]) -> None:
        self.fields = tuple(fields)
        self.count = len(self.fields)
        self.nva = ffi.new("nghttp2_nv[]", max(self.count, 1))
        self._keep: list[Any] = []  # the buffers nva points into
        for entry, (name, value) in zip(self.nva, self.fields, strict=False):
            name_buffer, value_buffer = ffi.new("uint8_t[]", name), ffi.new("uint8_t[]", value)
            self._keep += (name_buffer, value_buffer)
            entry.name, entry.namelen = name_buffer, len(name)
            entry.value, entry.valuelen = value_buffer, len(value)


class SessionEvents(Protocol):
    """What a ServerSession tells the layer above. A method returning False (or an exception
    escaping it) fails the session: nghttp2 stops and `recv`/`send` raise."""

    def begin_request(self, stream_id: int) -> None:
        """A request's HEADERS began."""

    def header(self, stream_id: int, name: bytes, value: bytes) -> int:
        """One header field of the stream's request (or trailers): 0, ERR_PAUSE (stop taking
        input for now) or ERR_TEMPORAL_CALLBACK_FAILURE (reset the stream)."""

    def request_headers_done(self, stream_id: int, end_stream: bool) -> None:
        """The request's header block is complete (and checked by nghttp2)."""

    def data(self, stream_id: int, data: bytes) -> int:
        """Request DATA bytes, in order: 0, or ERR_PAUSE (stop taking input for now)."""

    def end_stream(self, stream_id: int) -> None:
        """The client's side of the stream ended (END_STREAM on DATA or trailers)."""

    def stream_closed(self, stream_id: int, error_code: int) -> None:
        """The stream is gone: both sides ended, or a reset either way."""

    def goaway_received(self) -> None:
        """The peer opens no more streams: the session finishes once its streams are done."""

    def data_length(self, stream_id: int, room: int) -> tuple[int, bool]:
        """How many queued bytes (at most `room`) the next DATA frame of the stream's data
        submission carries, and whether they are all it has queued (the submission ends)."""

    def write_data(self, stream_id: int, frame_header: bytes, length: int) -> None:
        """Write the frame header, then the next `length` queued bytes of the stream."""

    def output(self, data: bytes) -> None:
        """Bytes for the peer (every frame but DATA payloads)."""

    def trailers(self, stream_id: int) -> HeaderList | None:
        """The trailers that end the stream, when its data submission ends; None for none
        yet (more data may follow, in a new submission)."""


class _Callbacks:
    """The C callbacks, made once: each routes to the session named by `user_data`."""

    def __init__(self) -> None:
        self.keep: list[Any] = []
        self.read_data = self._callback("nghttp2_data_source_read_callback", self._read_data,
                                        ERR_CALLBACK_FAILURE)
        handle = ffi.new("nghttp2_session_callbacks **")
        _check(lib.nghttp2_session_callbacks_new(handle), "nghttp2_session_callbacks_new")
        self.pointer = handle[0]
        for setter, kind, function in (
                ("send_callback", "nghttp2_send_callback", self._send),
                ("send_data_callback", "nghttp2_send_data_callback", self._send_data),
                ("on_frame_recv_callback", "nghttp2_on_frame_recv_callback", self._frame_recv),
                ("on_data_chunk_recv_callback", "nghttp2_on_data_chunk_recv_callback",
                 self._data_chunk),
                ("on_stream_close_callback", "nghttp2_on_stream_close_callback",
                 self._stream_close),
                ("on_begin_headers_callback", "nghttp2_on_begin_headers_callback",
                 self._begin_headers),
                ("on_header_callback", "nghttp2_on_header_callback", self._header)):
            getattr(lib, f"nghttp2_session_callbacks_set_{setter}")(
                self.pointer, self._callback(kind, function, ERR_CALLBACK_FAILURE))

    def _callback(self, kind: str, function: Any, error: int) -> Any:
        callback = ffi.callback(kind, function, onerror=_log_callback_error, error=error)
        self.keep.append(callback)
        return callback

    @staticmethod
    def _send(session: Any, data: Any, length: int, flags: int, user_data: Any) -> int:
        ffi.from_handle(user_data).events.output(ffi.buffer(data, length)[:])
        return length

    @staticmethod
    def _send_data(session: Any, frame: Any, frame_header: Any, length: int, source: Any,
                   user_data: Any) -> int:
        ffi.from_handle(user_data).events.write_data(
            frame.hd.stream_id, ffi.buffer(frame_header, 9)[:], length)
        return 0

    @staticmethod
    def _read_data(session: Any, stream_id: int, buffer: Any, room: int, data_flags: Any,
                   source: Any, user_data: Any) -> int:
        events = ffi.from_handle(user_data).events
        length, last = events.data_length(stream_id, room)
        if last:
            flags = DATA_FLAG_NO_COPY | DATA_FLAG_EOF | DATA_FLAG_NO_END_STREAM
            trailers = events.trailers(stream_id)
            if trailers is not None:  # they follow this DATA and end the stream
                _check(lib.nghttp2_submit_trailer(session, stream_id, trailers.nva,
                                                  trailers.count), "nghttp2_submit_trailer")
            data_flags[0] = flags
        else:
            data_flags[0] = DATA_FLAG_NO_COPY
        return length

    @staticmethod
    def _frame_recv(session: Any, frame: Any, user_data: Any) -> int:
        hd = frame.hd
        events = ffi.from_handle(user_data).events
        if hd.type == FRAME_HEADERS and frame.headers.cat == HCAT_REQUEST:
            events.request_headers_done(hd.stream_id, bool(hd.flags & FLAG_END_STREAM))
        elif hd.type in (FRAME_DATA, FRAME_HEADERS) and hd.flags & FLAG_END_STREAM:
            events.end_stream(hd.stream_id)
        elif hd.type == FRAME_GOAWAY:
            events.goaway_received()
        return 0

    @staticmethod
    def _data_chunk(session: Any, flags: int, stream_id: int, data: Any, length: int,
                    user_data: Any) -> int:
        return ffi.from_handle(user_data).events.data(stream_id, ffi.buffer(data, length)[:])

    @staticmethod
    def _stream_close(session: Any, stream_id: int, error_code: int, user_data: Any) -> int:
        ffi.from_handle(user_data).events.stream_closed(stream_id, error_code)
        return 0

    @staticmethod
    def _begin_headers(session: Any, frame: Any, user_data: Any) -> int:
        if frame.hd.type == FRAME_HEADERS and frame.headers.cat == HCAT_REQUEST:
            ffi.from_handle(user_data).events.begin_request(frame.hd.stream_id)
        return 0

    @staticmethod
    def _header(session: Any, frame: Any, name: Any, name_length: int, value: Any,
                value_length: int, flags: int, user_data: Any) -> int:
        return ffi.from_handle(user_data).events.header(
            frame.hd.stream_id, ffi.buffer(name, name_length)[:],
            ffi.buffer(value, value_length)[:])


def _log_callback_error(kind: type[BaseException], error: BaseException, traceback: Any) -> None:
    log.error("HTTP/2 callback failed: %s: %s", kind.__name__, error,
                                      exc_info=(kind, error, traceback))


_callbacks: _Callbacks | None = None


def _shared_callbacks() -> _Callbacks:
    global _callbacks
    if _callbacks is None:
        _callbacks = _Callbacks()
    return _callbacks


class SessionOptions:
    """nghttp2's defences, set per session (each one a named limit of `sidecar.http2`)."""

    def __init__(self, *, max_settings: int, max_outbound_ack: int, reset_limit: bool,
                 max_continuations: int, max_deflate_table: int) -> None:
        """`reset_limit`: nghttp2's own limit on incoming RST_STREAM (burst 1000, 33/s)."""
        self.max_settings = max_settings
        self.max_outbound_ack = max_outbound_ack
        self.reset_limit = reset_limit
        self.max_continuations = max_continuations
        self.max_deflate_table = max_deflate_table


class ServerSession:
    """One server-side `nghttp2_session`."""

    def __init__(self, events: SessionEvents, options: SessionOptions,
                 settings: Sequence[tuple[int, int]]) -> None:
        self.events = events
        self._handle = ffi.new_handle(self)  # lives as long as the session points to it
        callbacks = _shared_callbacks()
        self._provider = ffi.new("nghttp2_data_provider *")
        self._provider.read_callback = callbacks.read_data
        option_handle = ffi.new("nghttp2_option **")
        _check(lib.nghttp2_option_new(option_handle), "nghttp2_option_new")
        option = option_handle[0]
        try:
            # The layer above says when bytes are done with (`consume`): a stream's window
            # then bounds what it holds unprocessed.
            lib.nghttp2_option_set_no_auto_window_update(option, 1)
            lib.nghttp2_option_set_max_settings(option, options.max_settings)
            lib.nghttp2_option_set_max_outbound_ack(option, options.max_outbound_ack)
            lib.nghttp2_option_set_max_deflate_dynamic_table_size(option,
                                                                  options.max_deflate_table)
            if not options.reset_limit:
                lib.nghttp2_option_set_stream_reset_rate_limit(option, _UNLIMITED, _UNLIMITED)
            lib.nghttp2_option_set_max_continuations(option, options.max_continuations)
            session = ffi.new("nghttp2_session **")
            # SAFETY: the callbacks and the handle outlive the session (module-level and
            # self._handle); nghttp2 copies the options, deleted right after.
            _check(lib.nghttp2_session_server_new2(session, callbacks.pointer, self._handle,
                                                   option), "nghttp2_session_server_new2")
        finally:
            lib.nghttp2_option_del(option)
        self._session: Any = session[0]
        entries = ffi.new("nghttp2_settings_entry[]", len(settings))
        for entry, (key, value) in zip(entries, settings, strict=True):
            entry.settings_id, entry.value = key, value
        _check(lib.nghttp2_submit_settings(self._session, 0, entries, len(settings)),
               "nghttp2_submit_settings")

    def _live(self) -> Any:
        if self._session is None:
            raise SessionClosed("the HTTP/2 session is closed")
        return self._session

    def set_window(self, stream_id: int, size: int) -> None:
        """Our receive window for the stream (0: the connection); WINDOW_UPDATE as needed."""
        _check(lib.nghttp2_session_set_local_window_size(self._live(), 0, stream_id, size),
               "nghttp2_session_set_local_window_size")

    def consume_connection(self, size: int) -> None:
        """`size` bytes received are done with, for the connection's window."""
        _check(lib.nghttp2_session_consume_connection(self._live(), size),
               "nghttp2_session_consume_connection")

    def consume_stream(self, stream_id: int, size: int) -> None:
        """`size` bytes of the stream are done with, for its window."""
        _check(lib.nghttp2_session_consume_stream(self._live(), stream_id, size),
               "nghttp2_session_consume_stream")

    def recv(self, data: bytes) -> int:
        """Feed bytes from the peer; how many were taken (fewer than all when a callback
        paused). Raises Nghttp2Error when the session must end (a GOAWAY, where one is due,
        is then queued for `send`)."""
        # SAFETY: `data` is immutable and outlives the call; nghttp2 copies what it keeps.
        return _check(lib.nghttp2_session_mem_recv(self._live(), data, len(data)),
                      "nghttp2_session_mem_recv")

    def send(self) -> None:
        """Run nghttp2's output: every frame that can go out now reaches `events.output`
        or `events.write_data`."""
        _check(lib.nghttp2_session_send(self._live()), "nghttp2_session_send")

    @property
    def finished(self) -> bool:
        """Neither side has anything more to say: the connection can close (only ever after
        a GOAWAY, sent or received)."""
        session = self._live()
        return not lib.nghttp2_session_want_read(session) \
            and not lib.nghttp2_session_want_write(session)

    def respond(self, stream_id: int, headers: HeaderList, end_stream: bool) -> None:
        """Response HEADERS; with `end_stream`, they end the stream (gRPC's trailers-only)."""
        # SAFETY: nghttp2 copies the fields before this returns.
        _check(lib.nghttp2_submit_headers(self._live(), FLAG_END_STREAM if end_stream else 0,
                                          stream_id, ffi.NULL, headers.nva, headers.count,
                                          ffi.NULL), "nghttp2_submit_headers")

    def submit_data(self, stream_id: int) -> None:
        """DATA to follow from `events.data_length`, until it says it has sent all that is
        queued (a later `submit_data` goes on from there)."""
        # SAFETY: the provider lives as long as self, and the session with it.
        _check(lib.nghttp2_submit_data(self._live(), 0, stream_id, self._provider),
               "nghttp2_submit_data")

    def trailers(self, stream_id: int, trailers: HeaderList) -> None:
        """HEADERS ending the stream; only once no data submission of it is pending."""
        _check(lib.nghttp2_submit_trailer(self._live(), stream_id, trailers.nva,
                                          trailers.count), "nghttp2_submit_trailer")

    def shutdown_notice(self) -> None:
        """A GOAWAY naming 2^31-1: stop opening streams (a real GOAWAY follows)."""
        _check(lib.nghttp2_submit_shutdown_notice(self._live()), "nghttp2_submit_shutdown_notice")

    def goaway(self, code: int = NO_ERROR) -> None:
        """GOAWAY naming the last stream this side processed: later ones are refused."""
        session = self._live()
        last = lib.nghttp2_session_get_last_proc_stream_id(session)
        _check(lib.nghttp2_submit_goaway(session, 0, last, code, ffi.NULL, 0),
               "nghttp2_submit_goaway")

    def terminate(self, code: int) -> None:
        """GOAWAY with `code` after a failure, unless one is on its way already."""
        lib.nghttp2_session_terminate_session(self._live(), code)  # fails only if it is

    def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            lib.nghttp2_session_del(session)
