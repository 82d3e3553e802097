//! hyperfilter.zig: write a hyperfilter plugin in Zig, as a core WebAssembly module.
//!
//! A thin layer over the C SDK (plugins/sdk/c), which does the canonical-ABI lowering of
//! plugins/wit/hyperfilter.wit and is linked into every plugin: this file declares its types
//! and functions (the bundled Zig has no @cImport) and gives them slices, enums, error sets
//! and verdict constructors. The plugin's file (plugin.zig) declares the hooks it needs,
//! public, by these names (exports.zig hands them to the C SDK); the others forward
//! everything:
//!
//!     const hf = @import("hyperfilter");
//!
//!     pub fn onTcpOpen(info: *const hf.StreamInfo) hf.TcpVerdict
//!     pub fn onTcpData(direction: hf.Direction, data: []const u8, end_of_stream: bool) hf.TcpVerdict
//!     pub fn onTcpClose() void
//!     pub fn onHttpOpen(info: *const hf.StreamInfo) hf.HttpVerdict
//!     pub fn onHttpHeaders(direction: hf.Direction, headers: hf.Fields, end_of_stream: bool) hf.HttpVerdict
//!     pub fn onHttpBody(direction: hf.Direction, body: []const u8, end_of_stream: bool) hf.HttpVerdict
//!     pub fn onHttpTrailers(direction: hf.Direction, trailers: hf.Fields) hf.HttpVerdict
//!
//! Memory: what a hook is handed, what a capability returns and what a verdict holds live in
//! the C SDK's event arena, emptied when the next event begins (`alloc` and `event_allocator`
//! allocate there too, and names and keys are copied there with a NUL on their way to the C
//! SDK). Keep state across events in global variables, of a fixed size: there
//! is no allocator whose memory outlives an event.
//!
//! `hyperfilter plugin build DIR` compiles plugin.zig with this module and exports.zig, and
//! links them with the C SDK.

const std = @import("std");

// ---- data the host passes in -------------------------------------------------------------

/// A byte string the host lent (hf_bytes).
pub const Bytes = extern struct {
    ptr: ?[*]const u8,
    len: usize,

    pub fn slice(self: Bytes) []const u8 {
        return if (self.ptr) |p| p[0..self.len] else &.{};
    }
};

/// UTF-8 text the host lent (hf_string).
pub const String = extern struct {
    ptr: ?[*]const u8,
    len: usize,

    pub fn slice(self: String) []const u8 {
        return if (self.ptr) |p| p[0..self.len] else &.{};
    }
};

/// One header or trailer: a lower-case name and its raw value (hf_field).
pub const Field = extern struct {
    name: String,
    value: Bytes,
};

/// Header or trailer fields in Envoy's order (hf_fields).
pub const Fields = extern struct {
    ptr: ?[*]const Field,
    len: usize,

    pub fn items(self: Fields) []const Field {
        return if (self.ptr) |p| p[0..self.len] else &.{};
    }

    /// The value of the first field called `name` (lower-case), or null.
    pub fn get(self: Fields, name: []const u8) ?[]const u8 {
        for (self.items()) |field| {
            if (std.mem.eql(u8, field.name.slice(), name)) return field.value.slice();
        }
        return null;
    }
};

pub const MetadataEntry = extern struct {
    key: String,
    value: String,
};

/// What the sidecar knows about a stream when it opens (hf_stream_info).
pub const StreamInfo = extern struct {
    /// The client's "ip:port"; empty when Envoy does not send it.
    source_address: String,
    destination_address: String,
    /// The TLS server name (SNI) the client asked for, where Envoy knows it; empty otherwise.
    server_name: String,
    metadata_ptr: ?[*]const MetadataEntry,
    metadata_len: usize,

    /// The Envoy stream's gRPC metadata, as set by the filter's `initial_metadata`.
    pub fn metadata(self: *const StreamInfo) []const MetadataEntry {
        return if (self.metadata_ptr) |p| p[0..self.metadata_len] else &.{};
    }

    pub fn metadataValue(self: *const StreamInfo, key: []const u8) ?[]const u8 {
        for (self.metadata()) |entry| {
            if (std.mem.eql(u8, entry.key.slice(), key)) return entry.value.slice();
        }
        return null;
    }
};

/// Which way bytes travel (hf_direction).
pub const Direction = enum(c_int) {
    /// From the client toward the upstream: TCP bytes Envoy read, the HTTP request.
    inbound = 0,
    /// From the upstream toward the client.
    outbound = 1,
};

// ---- verdicts ----------------------------------------------------------------------------

/// What to do with a piece of a TCP connection (hf_tcp_verdict). Return `.forward`, `.close`,
/// `.reset`, `.replace(bytes)`, `.answer(bytes)` or `.answerAndClose(bytes)`.
pub const TcpVerdict = extern struct {
    action: Action,
    data: Bytes,

    pub const Action = enum(c_int) { forward = 0, replace = 1, close = 2, reset = 3, answer = 4, answer_and_close = 5 };

    /// Pass the bytes on unchanged.
    pub const forward: TcpVerdict = .{ .action = .forward, .data = .{ .ptr = null, .len = 0 } };
    /// Drop the bytes and close the connection (FIN).
    pub const close: TcpVerdict = .{ .action = .close, .data = .{ .ptr = null, .len = 0 } };
    /// Drop the bytes and reset the connection (RST).
    pub const reset: TcpVerdict = .{ .action = .reset, .data = .{ .ptr = null, .len = 0 } };

    /// Pass `bytes` instead (copied: they may live anywhere).
    pub fn replace(bytes: []const u8) TcpVerdict {
        return hf_replace(bytes.ptr, bytes.len);
    }

    /// Drop the bytes and send `bytes` toward the client; the connection stays open.
    pub fn answer(bytes: []const u8) TcpVerdict {
        return hf_answer(bytes.ptr, bytes.len);
    }

    /// Drop the bytes, send `bytes` toward the client, then close the connection.
    pub fn answerAndClose(bytes: []const u8) TcpVerdict {
        return hf_answer_and_close(bytes.ptr, bytes.len);
    }
};

/// What to do with a piece of an HTTP request or response (hf_http_verdict): `.forward()`
/// with changes, or `.respond(status, body)`.
pub const HttpVerdict = extern struct {
    is_response: bool,
    status: u16,
    headers: ?[*]Field,
    headers_len: usize,
    headers_cap: usize,
    removes: ?[*]String,
    removes_len: usize,
    removes_cap: usize,
    has_body: bool,
    body: Bytes,

    /// Continue; the changes made with the methods below apply.
    pub fn forward() HttpVerdict {
        return hf_http_forward();
    }

    /// Stop processing and answer the client (add headers with setHeader).
    pub fn respond(status: u16, body: []const u8) HttpVerdict {
        return hf_http_respond(status, body.ptr, body.len);
    }

    /// Set header `name` (lower-case), replacing any of that name; on a response, add it.
    pub fn setHeader(self: *HttpVerdict, name: []const u8, value: []const u8) void {
        hf_http_set_header(self, cString(name), value.ptr, value.len);
    }

    pub fn removeHeader(self: *HttpVerdict, name: []const u8) void {
        hf_http_remove_header(self, cString(name));
    }

    /// Replace the body (or, when it is streamed, this chunk).
    pub fn setBody(self: *HttpVerdict, body: []const u8) void {
        hf_http_set_body(self, body.ptr, body.len);
    }
};

// ---- capabilities: calling one makes the module import it; the manifest must grant it ----

pub const Level = enum(c_int) { debug = 0, info = 1, warn = 2, err = 3 };

/// Capability `log`.
pub fn log(level: Level, message: []const u8) void {
    hf_log(level, cString(message));
}

/// Capability `config`: the value of `key` in the manifest's [config], or null.
pub fn config(key: []const u8) ?[]const u8 {
    var value: String = undefined;
    return if (hf_config_get(cString(key), &value)) value.slice() else null;
}

/// Capability `clock`: nanoseconds since the Unix epoch.
pub fn now() u64 {
    return hf_clock_now();
}

/// Capability `clock`: monotonic nanoseconds, for intervals.
pub fn monotonic() u64 {
    return hf_clock_monotonic();
}

/// Capability `random`: `len` (at most 4096) cryptographically secure random bytes.
pub fn randomBytes(len: u32) []const u8 {
    return hf_random_bytes(len).slice();
}

/// Capability `metrics`: counter and gauge names must be declared in the grant.
pub fn metricAdd(name: []const u8, delta: u64) void {
    hf_metric_add(cString(name), delta);
}

pub fn metricSet(name: []const u8, value: i64) void {
    hf_metric_set(cString(name), value);
}

/// Capability `shared-state`.
pub const StateError = error{ QuotaExceeded, NotANumber };

pub fn stateGet(key: []const u8) ?[]const u8 {
    var value: Bytes = undefined;
    return if (hf_state_get(cString(key), &value)) value.slice() else null;
}

/// Store `value` under `key`; `ttl_ms` of 0 keeps it until deleted.
pub fn stateSet(key: []const u8, value: []const u8, ttl_ms: u32) StateError!void {
    return stateResult(hf_state_set(cString(key), value.ptr, value.len, ttl_ms));
}

pub fn stateDelete(key: []const u8) void {
    hf_state_delete(cString(key));
}

/// Add `delta` to the decimal integer under `key` (0 when absent); the sum.
pub fn stateIncrement(key: []const u8, delta: i64, ttl_ms: u32) StateError!i64 {
    var total: i64 = 0;
    try stateResult(hf_state_increment(cString(key), delta, ttl_ms, &total));
    return total;
}

const StateStatus = enum(c_int) { ok = 0, quota_exceeded = 1, not_a_number = 2 };

fn stateResult(status: StateStatus) StateError!void {
    return switch (status) {
        .ok => {},
        .quota_exceeded => error.QuotaExceeded,
        .not_a_number => error.NotANumber,
    };
}

// ---- helpers -----------------------------------------------------------------------------

/// `text` with a NUL after it, in the event arena: what the C SDK takes for names and keys.
fn cString(text: []const u8) [*:0]const u8 {
    const copy = alloc(text.len + 1);
    @memcpy(copy[0..text.len], text);
    copy[text.len] = 0;
    return @ptrCast(copy.ptr);
}

/// Memory in the event arena (8-byte aligned), gone when the next event begins.
pub fn alloc(len: usize) []u8 {
    const ptr: [*]u8 = @ptrCast(hf_alloc(len));
    return ptr[0..len];
}

/// The event arena as a std.mem.Allocator, for std functions that take one (std.fmt.allocPrint,
/// ArrayList): what it allocates is gone when the next event begins, and free does nothing.
/// Use it, never std.heap.wasm_allocator or page_allocator: those grow memory behind the
/// arena's back, which takes every page past the program's data as its own.
pub const event_allocator: std.mem.Allocator = .{ .ptr = undefined, .vtable = &.{
    .alloc = arenaAlloc,
    .resize = std.mem.Allocator.noResize,
    .remap = std.mem.Allocator.noRemap,
    .free = std.mem.Allocator.noFree,
} };

fn arenaAlloc(_: *anyopaque, len: usize, alignment: std.mem.Alignment, _: usize) ?[*]u8 {
    const unit = alignment.toByteUnits();
    // hf_alloc aligns to 8 and traps when memory runs out: never null
    const ptr = @intFromPtr(hf_alloc(if (unit <= 8) len else len + unit));
    return @ptrFromInt(alignment.forward(ptr));
}

// ---- the C SDK (hyperfilter.h) -------------------------------------------------------------

extern fn hf_replace(data: [*]const u8, len: usize) TcpVerdict;
extern fn hf_answer(data: [*]const u8, len: usize) TcpVerdict;
extern fn hf_answer_and_close(data: [*]const u8, len: usize) TcpVerdict;
extern fn hf_http_forward() HttpVerdict;
extern fn hf_http_respond(status: u16, body: [*]const u8, len: usize) HttpVerdict;
extern fn hf_http_set_header(verdict: *HttpVerdict, name: [*:0]const u8, value: [*]const u8, len: usize) void;
extern fn hf_http_remove_header(verdict: *HttpVerdict, name: [*:0]const u8) void;
extern fn hf_http_set_body(verdict: *HttpVerdict, body: [*]const u8, len: usize) void;
extern fn hf_alloc(size: usize) *anyopaque;
extern fn hf_log(level: Level, message: [*:0]const u8) void;
extern fn hf_config_get(key: [*:0]const u8, value: *String) bool;
extern fn hf_clock_now() u64;
extern fn hf_clock_monotonic() u64;
extern fn hf_random_bytes(len: u32) Bytes;
extern fn hf_metric_add(name: [*:0]const u8, delta: u64) void;
extern fn hf_metric_set(name: [*:0]const u8, value: i64) void;
extern fn hf_state_get(key: [*:0]const u8, value: *Bytes) bool;
extern fn hf_state_set(key: [*:0]const u8, value: [*]const u8, len: usize, ttl_ms: u32) StateStatus;
extern fn hf_state_delete(key: [*:0]const u8) void;
extern fn hf_state_increment(key: [*:0]const u8, delta: i64, ttl_ms: u32, total: *i64) StateStatus;
