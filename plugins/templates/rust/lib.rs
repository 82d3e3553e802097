//! ${name}: a hyperfilter plugin (a core module built with rustc). See plugins/sdk/rust/lib.rs.
#![no_std]

use hyperfilter::{Direction, Fields, Filter, HttpVerdict, Level, TcpVerdict};

/// The state of one stream (this template keeps none).
struct Plugin;

impl Filter for Plugin {
    fn tcp_data(
        &mut self,
        direction: Direction,
        data: &[u8],
        _end_of_stream: bool,
    ) -> TcpVerdict<'_> {
        if direction == Direction::Inbound && data.windows(9).any(|w| w == b"forbidden") {
            hyperfilter::log(Level::Warn, "closing a connection");
            return TcpVerdict::Close;
        }
        TcpVerdict::Forward
    }

    fn http_headers(
        &mut self,
        direction: Direction,
        headers: Fields<'_>,
        _end_of_stream: bool,
    ) -> HttpVerdict {
        if direction == Direction::Inbound && headers.get("x-block").is_some() {
            return HttpVerdict::respond(403, b"blocked\n");
        }
        HttpVerdict::forward().set_header("x-greeting", b"hello")
    }
}

// The state every stream's sandbox starts with.
hyperfilter::export!(static PLUGIN: Plugin = Plugin);
