//! The capabilities: calling one makes the module import it, and the manifest must grant it.
//! Names and keys are copied (with a NUL) into the event arena on the way to the C SDK.

use crate::ffi::{self, c_string, RawBytes};

/// Capability `log`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Debug = 0,
    Info = 1,
    Warn = 2,
    Error = 3,
}

pub fn log(level: Level, message: &str) {
    unsafe { ffi::hf_log(level as i32, c_string(message)) }
}

/// Capability `config`: `read` gets the value of `key` in the manifest's [config] (None when
/// absent), lent for the call.
pub fn config<R>(key: &str, read: impl FnOnce(Option<&str>) -> R) -> R {
    let mut value = RawBytes {
        ptr: core::ptr::null(),
        len: 0,
    };
    let found = unsafe { ffi::hf_config_get(c_string(key), &mut value) };
    read(found.then(|| unsafe { ffi::text(value) }))
}

/// Capability `clock`: nanoseconds since the Unix epoch.
pub fn now() -> u64 {
    unsafe { ffi::hf_clock_now() }
}

/// Capability `clock`: monotonic nanoseconds, for intervals.
pub fn monotonic() -> u64 {
    unsafe { ffi::hf_clock_monotonic() }
}

/// Capability `random`: fill `buffer` with cryptographically secure random bytes.
pub fn fill_random(buffer: &mut [u8]) {
    const MOST_PER_CALL: usize = 4096; // the interface's bound
    for chunk in buffer.chunks_mut(MOST_PER_CALL) {
        let mut raw = RawBytes {
            ptr: core::ptr::null(),
            len: 0,
        };
        unsafe { ffi::hf_random_bytes(&mut raw, chunk.len() as u32) };
        chunk.copy_from_slice(unsafe { ffi::bytes(raw) });
    }
}

/// Capability `metrics`: counter and gauge names must be declared in the grant.
pub fn metric_add(name: &str, delta: u64) {
    unsafe { ffi::hf_metric_add(c_string(name), delta) }
}

pub fn metric_set(name: &str, value: i64) {
    unsafe { ffi::hf_metric_set(c_string(name), value) }
}

/// Capability `shared-state`: why a change was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateError {
    /// The grant's key count or byte quota would be exceeded.
    QuotaExceeded,
    /// `state_increment` found a value that is not a decimal integer.
    NotANumber,
}

fn state_result(status: i32) -> Result<(), StateError> {
    match status {
        0 => Ok(()),
        1 => Err(StateError::QuotaExceeded),
        _ => Err(StateError::NotANumber),
    }
}

/// `read` gets the value under `key` (None when absent), lent for the call.
pub fn state_get<R>(key: &str, read: impl FnOnce(Option<&[u8]>) -> R) -> R {
    let mut value = RawBytes {
        ptr: core::ptr::null(),
        len: 0,
    };
    let found = unsafe { ffi::hf_state_get(c_string(key), &mut value) };
    read(found.then(|| unsafe { ffi::bytes(value) }))
}

/// Store `value` under `key`; `ttl_ms` of 0 keeps it until deleted.
pub fn state_set(key: &str, value: &[u8], ttl_ms: u32) -> Result<(), StateError> {
    state_result(unsafe { ffi::hf_state_set(c_string(key), value.as_ptr(), value.len(), ttl_ms) })
}

pub fn state_delete(key: &str) {
    unsafe { ffi::hf_state_delete(c_string(key)) }
}

/// Add `delta` to the decimal integer under `key` (0 when absent); the sum. `ttl_ms` applies
/// when the key is created.
pub fn state_increment(key: &str, delta: i64, ttl_ms: u32) -> Result<i64, StateError> {
    let mut total = 0;
    state_result(unsafe { ffi::hf_state_increment(c_string(key), delta, ttl_ms, &mut total) })?;
    Ok(total)
}
