//! hyperfilter: write a hyperfilter plugin in Rust, as a core WebAssembly module.
//!
//! A thin layer over the C SDK (plugins/sdk/c), which does the canonical-ABI lowering of
//! plugins/wit/hyperfilter.wit and is linked into every plugin. A plugin is a `#![no_std]`
//! crate (lib.rs) that implements [`Filter`] (only the hooks its manifest's events name: the
//! others forward) and exports it:
//!
//! ```ignore
//! #![no_std]
//! use hyperfilter::{Direction, Filter, TcpVerdict};
//!
//! struct Plugin {
//!     commands: u32,
//! }
//!
//! impl Filter for Plugin {
//!     fn tcp_data(&mut self, direction: Direction, data: &[u8], _end_of_stream: bool)
//!             -> TcpVerdict<'_> {
//!         self.commands += 1;
//!         if direction == Direction::Inbound && data.starts_with(b"QUIT") {
//!             return TcpVerdict::AnswerAndClose(b"bye\r\n");
//!         }
//!         TcpVerdict::Forward
//!     }
//! }
//!
//! // The state every connection's sandbox starts with.
//! hyperfilter::export!(static PLUGIN: Plugin = Plugin { commands: 0 });
//! ```
//!
//! Memory: what a hook is handed, and what a capability lends to a closure, lives in the C
//! SDK's event arena, emptied when the next event begins; the lifetimes say so. A verdict may
//! borrow from the event or from the plugin's state (to pass on bytes of `data`, name the
//! lifetime: `fn tcp_data<'a>(&'a mut self, direction: Direction, data: &'a [u8], ...) ->
//! TcpVerdict<'a>`). There is no global allocator: the state kept across a stream's events is
//! the `Filter` value itself, of a fixed size. (An allocator that grows memory by itself, as
//! std's dlmalloc does, would fight the arena: the arena takes every page past the program's
//! data as its own and assumes the pages it grows follow on from them.)
//!
//! `hyperfilter plugin build DIR` builds this crate and the plugin with rustc for
//! wasm32-unknown-unknown and links them with the C SDK.

#![no_std]

#[doc(hidden)]
pub mod ffi;

mod capabilities;
pub use capabilities::*;

use ffi::{RawField, RawHttpVerdict};

/// Which way bytes travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From the client toward the upstream: TCP bytes Envoy read, the HTTP request.
    Inbound,
    /// From the upstream toward the client.
    Outbound,
}

/// What to do with a piece of a TCP connection. Bytes in a verdict are copied when the hook
/// returns: they may be borrowed from anywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpVerdict<'a> {
    /// Pass the bytes on unchanged.
    Forward,
    /// Pass these bytes instead. From `tcp_open`: send them upstream before the client's.
    Replace(&'a [u8]),
    /// Drop the bytes and close the connection (FIN).
    Close,
    /// Drop the bytes and reset the connection (RST).
    Reset,
    /// Drop the bytes and send these toward the client; the connection stays open.
    Answer(&'a [u8]),
    /// Drop the bytes, send these toward the client, then close the connection.
    AnswerAndClose(&'a [u8]),
}

/// What to do with a piece of an HTTP request or response: forward it (with changes) or
/// answer the client. Changes are copied as they are made.
pub struct HttpVerdict {
    raw: RawHttpVerdict,
}

impl HttpVerdict {
    /// Continue; the changes made with the methods below apply.
    pub fn forward() -> Self {
        Self::from_c(|raw| unsafe { ffi::hf_http_forward(raw) })
    }

    /// Stop processing and answer the client (add headers with `set_header`).
    pub fn respond(status: u16, body: &[u8]) -> Self {
        Self::from_c(|raw| unsafe { ffi::hf_http_respond(raw, status, body.as_ptr(), body.len()) })
    }

    /// Set header `name` (lower-case), replacing any of that name; on a response, add it.
    pub fn set_header(mut self, name: &str, value: &[u8]) -> Self {
        unsafe {
            ffi::hf_http_set_header(
                &mut self.raw,
                ffi::c_string(name),
                value.as_ptr(),
                value.len(),
            )
        };
        self
    }

    pub fn remove_header(mut self, name: &str) -> Self {
        unsafe { ffi::hf_http_remove_header(&mut self.raw, ffi::c_string(name)) };
        self
    }

    /// Replace the body (or, when it is streamed, this chunk).
    pub fn set_body(mut self, body: &[u8]) -> Self {
        unsafe { ffi::hf_http_set_body(&mut self.raw, body.as_ptr(), body.len()) };
        self
    }

    fn from_c(make: impl FnOnce(*mut RawHttpVerdict)) -> Self {
        let mut raw = core::mem::MaybeUninit::<RawHttpVerdict>::uninit();
        make(raw.as_mut_ptr());
        Self {
            raw: unsafe { raw.assume_init() },
        }
    }
}

/// HTTP header or trailer fields in Envoy's order: lower-case names, raw values.
#[derive(Clone, Copy)]
pub struct Fields<'a> {
    items: &'a [RawField],
}

impl<'a> Fields<'a> {
    /// # Safety
    /// `ptr` points at `len` fields that stay valid for `'a`.
    unsafe fn from_raw(ptr: *const RawField, len: usize) -> Self {
        Self {
            items: if len == 0 {
                &[]
            } else {
                core::slice::from_raw_parts(ptr, len)
            },
        }
    }

    /// The value of the first field called `name` (lower-case).
    pub fn get(&self, name: &str) -> Option<&'a [u8]> {
        self.iter()
            .find(|(field, _)| *field == name)
            .map(|(_, value)| value)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        self.items
            .iter()
            .map(|f| unsafe { (ffi::text(f.name), ffi::bytes(f.value)) })
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// What the sidecar knows about a stream when it opens.
pub struct StreamInfo<'a> {
    /// The client's "ip:port"; empty when Envoy does not send it.
    pub source_address: &'a str,
    pub destination_address: &'a str,
    /// The TLS server name (SNI) the client asked for, where Envoy knows it; empty otherwise.
    pub server_name: &'a str,
    metadata: Fields<'a>,
}

impl<'a> StreamInfo<'a> {
    /// The Envoy stream's gRPC metadata (the filter's `initial_metadata`), in order.
    pub fn metadata(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        // metadata values are strings, which the canonical ABI keeps UTF-8
        self.metadata
            .iter()
            .map(|(key, value)| (key, unsafe { core::str::from_utf8_unchecked(value) }))
    }

    /// The value of `key` in the stream's metadata.
    pub fn metadata_value(&self, key: &str) -> Option<&'a str> {
        self.metadata()
            .find(|(name, _)| *name == key)
            .map(|(_, value)| value)
    }
}

/// The plugin's hooks; each one not implemented forwards. The implementing type is the state
/// of one stream: every sandbox (one per connection or request) starts with the value given to
/// [`export!`], and the hooks change it as the stream's events arrive.
pub trait Filter {
    fn tcp_open<'a>(&'a mut self, _info: &StreamInfo<'_>) -> TcpVerdict<'a> {
        TcpVerdict::Forward
    }
    fn tcp_data<'a>(
        &'a mut self,
        _direction: Direction,
        _data: &'a [u8],
        _end_of_stream: bool,
    ) -> TcpVerdict<'a> {
        TcpVerdict::Forward
    }
    fn tcp_close(&mut self) {}
    fn http_open(&mut self, _info: &StreamInfo<'_>) -> HttpVerdict {
        HttpVerdict::forward()
    }
    fn http_headers(
        &mut self,
        _direction: Direction,
        _headers: Fields<'_>,
        _end_of_stream: bool,
    ) -> HttpVerdict {
        HttpVerdict::forward()
    }
    fn http_body(
        &mut self,
        _direction: Direction,
        _body: &[u8],
        _end_of_stream: bool,
    ) -> HttpVerdict {
        HttpVerdict::forward()
    }
    fn http_trailers(&mut self, _direction: Direction, _trailers: Fields<'_>) -> HttpVerdict {
        HttpVerdict::forward()
    }
}

/// Where [`export!`] keeps the plugin's state. A sandbox runs one event at a time on one
/// thread and never re-enters a hook, so each hook may have it `&mut`.
#[doc(hidden)]
pub struct Instance<T>(core::cell::UnsafeCell<T>);

unsafe impl<T> Sync for Instance<T> {}

impl<T> Instance<T> {
    pub const fn new(state: T) -> Self {
        Self(core::cell::UnsafeCell::new(state))
    }

    /// # Safety
    /// Only one hook at a time may hold the state: the export glue calls this once per hook.
    pub unsafe fn get(&self) -> &mut T {
        &mut *self.0.get()
    }
}

/// Export a [`Filter`] as the plugin's hooks (the C SDK's `hf_*` functions), with the state
/// every stream starts with, written as a static: `export!(static PLUGIN: Plugin = Plugin);`.
#[macro_export]
macro_rules! export {
    (static $name:ident : $plugin:ty = $initial:expr) => {
        static $name: $crate::Instance<$plugin> = $crate::Instance::new($initial);

        const _: () = {
            use $crate::ffi::{RawBytes, RawFields, RawHttpVerdict, RawStreamInfo, RawTcpVerdict};

            #[no_mangle]
            unsafe extern "C" fn hf_tcp_open(ret: *mut RawTcpVerdict, info: *const RawStreamInfo) {
                $crate::ffi::tcp_open($name.get(), ret, info)
            }
            #[no_mangle]
            unsafe extern "C" fn hf_tcp_data(
                ret: *mut RawTcpVerdict,
                direction: i32,
                data: *const RawBytes,
                end_of_stream: bool,
            ) {
                $crate::ffi::tcp_data($name.get(), ret, direction, data, end_of_stream)
            }
            #[no_mangle]
            unsafe extern "C" fn hf_tcp_close() {
                $crate::ffi::tcp_close($name.get())
            }
            #[no_mangle]
            unsafe extern "C" fn hf_http_open(
                ret: *mut RawHttpVerdict,
                info: *const RawStreamInfo,
            ) {
                $crate::ffi::http_open($name.get(), ret, info)
            }
            #[no_mangle]
            unsafe extern "C" fn hf_http_headers(
                ret: *mut RawHttpVerdict,
                direction: i32,
                headers: *const RawFields,
                end_of_stream: bool,
            ) {
                $crate::ffi::http_headers($name.get(), ret, direction, headers, end_of_stream)
            }
            #[no_mangle]
            unsafe extern "C" fn hf_http_body(
                ret: *mut RawHttpVerdict,
                direction: i32,
                body: *const RawBytes,
                end_of_stream: bool,
            ) {
                $crate::ffi::http_body($name.get(), ret, direction, body, end_of_stream)
            }
            #[no_mangle]
            unsafe extern "C" fn hf_http_trailers(
                ret: *mut RawHttpVerdict,
                direction: i32,
                trailers: *const RawFields,
            ) {
                $crate::ffi::http_trailers($name.get(), ret, direction, trailers)
            }
        };
    };
}

/// A panic traps: the sandbox faults and the plugin's failure policy applies.
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}
