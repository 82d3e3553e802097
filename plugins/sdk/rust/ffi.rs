//! The C SDK (plugins/sdk/c/hyperfilter.h) as Rust sees it, and the glue the `export!` macro
//! calls. Not for plugins to use directly.
//!
//! The declarations spell out clang's wasm32 C ABI by hand: a struct argument goes by pointer
//! to a copy, a struct result through a pointer the caller passes first. Rust has long passed
//! structs otherwise on wasm32-unknown-unknown (Debian's 1.63 does; rust-lang/rust#138762
//! moves it to the standard ABI), so the Rust side of this boundary has only pointers and
//! scalars: the same code links with any rustc.

use crate::{Direction, Fields, Filter, HttpVerdict, StreamInfo, TcpVerdict};

#[repr(C)]
#[derive(Clone, Copy)]
pub struct RawBytes {
    pub ptr: *const u8,
    pub len: usize,
}

#[repr(C)]
pub struct RawField {
    pub name: RawBytes,
    pub value: RawBytes,
}

#[repr(C)]
pub struct RawFields {
    pub ptr: *const RawField,
    pub len: usize,
}

#[repr(C)]
pub struct RawStreamInfo {
    pub source_address: RawBytes,
    pub destination_address: RawBytes,
    pub server_name: RawBytes,
    pub metadata: *const RawField, // hf_metadata_entry: two strings, laid out like a field
    pub metadata_len: usize,
}

#[repr(C)]
pub struct RawTcpVerdict {
    pub action: i32,
    pub data: RawBytes,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct RawHttpVerdict {
    pub respond: bool,
    pub status: u16,
    pub headers: *mut RawField,
    pub headers_len: usize,
    pub headers_cap: usize,
    pub removes: *mut RawBytes,
    pub removes_len: usize,
    pub removes_cap: usize,
    pub has_body: bool,
    pub body: RawBytes,
}

extern "C" {
    pub fn hf_replace(ret: *mut RawTcpVerdict, data: *const u8, len: usize);
    pub fn hf_answer(ret: *mut RawTcpVerdict, data: *const u8, len: usize);
    pub fn hf_answer_and_close(ret: *mut RawTcpVerdict, data: *const u8, len: usize);
    pub fn hf_http_forward(ret: *mut RawHttpVerdict);
    pub fn hf_http_respond(ret: *mut RawHttpVerdict, status: u16, body: *const u8, len: usize);
    pub fn hf_http_set_header(
        verdict: *mut RawHttpVerdict,
        name: *const u8,
        value: *const u8,
        len: usize,
    );
    pub fn hf_http_remove_header(verdict: *mut RawHttpVerdict, name: *const u8);
    pub fn hf_http_set_body(verdict: *mut RawHttpVerdict, body: *const u8, len: usize);
    pub fn hf_alloc(size: usize) -> *mut u8;
    pub fn hf_log(level: i32, message: *const u8);
    pub fn hf_config_get(key: *const u8, value: *mut RawBytes) -> bool;
    pub fn hf_clock_now() -> u64;
    pub fn hf_clock_monotonic() -> u64;
    pub fn hf_random_bytes(ret: *mut RawBytes, len: u32);
    pub fn hf_metric_add(name: *const u8, delta: u64);
    pub fn hf_metric_set(name: *const u8, value: i64);
    pub fn hf_state_get(key: *const u8, value: *mut RawBytes) -> bool;
    pub fn hf_state_set(key: *const u8, value: *const u8, len: usize, ttl_ms: u32) -> i32;
    pub fn hf_state_delete(key: *const u8);
    pub fn hf_state_increment(key: *const u8, delta: i64, ttl_ms: u32, total: *mut i64) -> i32;
}

/// Bytes the host or the C SDK lent, for as long as the event lasts.
///
/// # Safety
/// `raw` describes `len` readable bytes (or none).
pub unsafe fn bytes<'a>(raw: RawBytes) -> &'a [u8] {
    if raw.len == 0 {
        &[]
    } else {
        core::slice::from_raw_parts(raw.ptr, raw.len)
    }
}

/// # Safety
/// As `bytes`, and UTF-8: the canonical ABI's strings are.
pub unsafe fn text<'a>(raw: RawBytes) -> &'a str {
    core::str::from_utf8_unchecked(bytes(raw))
}

/// `text` with a NUL after it, in the event arena: what the C SDK takes for names and keys.
pub fn c_string(text: &str) -> *const u8 {
    unsafe {
        let copy = hf_alloc(text.len() + 1);
        core::ptr::copy_nonoverlapping(text.as_ptr(), copy, text.len());
        *copy.add(text.len()) = 0;
        copy
    }
}

fn direction(raw: i32) -> Direction {
    if raw == 0 {
        Direction::Inbound
    } else {
        Direction::Outbound
    }
}

unsafe fn stream_info<'a>(raw: *const RawStreamInfo) -> StreamInfo<'a> {
    let raw = &*raw;
    StreamInfo {
        source_address: text(raw.source_address),
        destination_address: text(raw.destination_address),
        server_name: text(raw.server_name),
        metadata: Fields::from_raw(raw.metadata, raw.metadata_len),
    }
}

unsafe fn lower_tcp(verdict: TcpVerdict<'_>, ret: *mut RawTcpVerdict) {
    let with = |action: i32| RawTcpVerdict {
        action,
        data: RawBytes {
            ptr: core::ptr::null(),
            len: 0,
        },
    };
    match verdict {
        TcpVerdict::Forward => ret.write(with(0)),
        TcpVerdict::Close => ret.write(with(2)),
        TcpVerdict::Reset => ret.write(with(3)),
        TcpVerdict::Replace(data) => hf_replace(ret, data.as_ptr(), data.len()),
        TcpVerdict::Answer(data) => hf_answer(ret, data.as_ptr(), data.len()),
        TcpVerdict::AnswerAndClose(data) => hf_answer_and_close(ret, data.as_ptr(), data.len()),
    }
}

unsafe fn lower_http(verdict: HttpVerdict, ret: *mut RawHttpVerdict) {
    ret.write(verdict.raw);
}

// The hooks, as the export! macro defines them. Safety: hyperfilter.c calls them with
// valid pointers for the duration of the call.

pub unsafe fn tcp_open<P: Filter>(
    plugin: &mut P,
    ret: *mut RawTcpVerdict,
    info: *const RawStreamInfo,
) {
    lower_tcp(plugin.tcp_open(&stream_info(info)), ret)
}

pub unsafe fn tcp_data<P: Filter>(
    plugin: &mut P,
    ret: *mut RawTcpVerdict,
    dir: i32,
    data: *const RawBytes,
    end_of_stream: bool,
) {
    lower_tcp(
        plugin.tcp_data(direction(dir), bytes(*data), end_of_stream),
        ret,
    )
}

pub unsafe fn tcp_close<P: Filter>(plugin: &mut P) {
    plugin.tcp_close()
}

pub unsafe fn http_open<P: Filter>(
    plugin: &mut P,
    ret: *mut RawHttpVerdict,
    info: *const RawStreamInfo,
) {
    lower_http(plugin.http_open(&stream_info(info)), ret)
}

pub unsafe fn http_headers<P: Filter>(
    plugin: &mut P,
    ret: *mut RawHttpVerdict,
    dir: i32,
    fields: *const RawFields,
    end_of_stream: bool,
) {
    let fields = &*fields;
    lower_http(
        plugin.http_headers(
            direction(dir),
            Fields::from_raw(fields.ptr, fields.len),
            end_of_stream,
        ),
        ret,
    )
}

pub unsafe fn http_body<P: Filter>(
    plugin: &mut P,
    ret: *mut RawHttpVerdict,
    dir: i32,
    body: *const RawBytes,
    end_of_stream: bool,
) {
    lower_http(
        plugin.http_body(direction(dir), bytes(*body), end_of_stream),
        ret,
    )
}

pub unsafe fn http_trailers<P: Filter>(
    plugin: &mut P,
    ret: *mut RawHttpVerdict,
    dir: i32,
    fields: *const RawFields,
) {
    let fields = &*fields;
    lower_http(
        plugin.http_trailers(direction(dir), Fields::from_raw(fields.ptr, fields.len)),
        ret,
    )
}
