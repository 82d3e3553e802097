//! tests/plugins/abi-probe/probe.c with the Rust SDK: every event answered with a verdict
//! built from all of its inputs, the same as the C probe's.
#![no_std]

use hyperfilter::{Direction, Fields, Filter, HttpVerdict, StreamInfo, TcpVerdict};

/// Room for the verdicts this probe builds (the tests' events are small).
struct Probe {
    out: [u8; 4096],
}

/// Appends to a buffer, front to back.
struct Writer<'a> {
    buffer: &'a mut [u8],
    length: usize,
}

impl<'a> Writer<'a> {
    fn new(buffer: &'a mut [u8]) -> Self {
        Self { buffer, length: 0 }
    }

    fn push(&mut self, bytes: &[u8]) -> &mut Self {
        self.buffer[self.length..self.length + bytes.len()].copy_from_slice(bytes);
        self.length += bytes.len();
        self
    }

    fn written(self) -> &'a [u8] {
        &self.buffer[..self.length]
    }
}

fn join<'a>(info: &StreamInfo<'_>, buffer: &'a mut [u8]) -> &'a [u8] {
    let mut out = Writer::new(buffer);
    for part in [
        info.source_address,
        info.destination_address,
        info.server_name,
    ] {
        out.push(part.as_bytes()).push(b"|");
    }
    for (key, value) in info.metadata() {
        out.push(key.as_bytes())
            .push(b"=")
            .push(value.as_bytes())
            .push(b";");
    }
    out.written()
}

fn inbound(direction: Direction) -> bool {
    direction == Direction::Inbound
}

impl Filter for Probe {
    fn tcp_open<'a>(&'a mut self, info: &StreamInfo<'_>) -> TcpVerdict<'a> {
        TcpVerdict::Replace(join(info, &mut self.out))
    }

    fn tcp_data<'a>(
        &'a mut self,
        direction: Direction,
        data: &'a [u8],
        end_of_stream: bool,
    ) -> TcpVerdict<'a> {
        match data {
            b"pass" => TcpVerdict::Forward,
            b"close" => TcpVerdict::Close,
            b"reset" => TcpVerdict::Reset,
            b"answer" => TcpVerdict::Answer(b"answered"),
            b"bye" => TcpVerdict::AnswerAndClose(b"bye\r\n"),
            _ => {
                let length = data.len();
                for (at, &byte) in self.out.iter_mut().zip(data.iter().rev()) {
                    *at = byte;
                }
                self.out[length] = if inbound(direction) { b'0' } else { b'1' };
                self.out[length + 1] = if end_of_stream { b'E' } else { b'-' };
                TcpVerdict::Replace(&self.out[..length + 2])
            }
        }
    }

    fn http_open(&mut self, info: &StreamInfo<'_>) -> HttpVerdict {
        HttpVerdict::forward().set_header("x-info", join(info, &mut self.out))
    }

    fn http_headers(
        &mut self,
        direction: Direction,
        headers: Fields<'_>,
        end_of_stream: bool,
    ) -> HttpVerdict {
        let mut verdict = HttpVerdict::forward();
        for (name, value) in headers.iter() {
            if name.len() > 7 && name.starts_with("x-drop-") {
                verdict = verdict.remove_header(name);
            } else if !name.starts_with(':') {
                let mut seen = [0u8; 256];
                let mut out = Writer::new(&mut seen);
                out.push(b"x-seen-").push(name.as_bytes());
                let seen = core::str::from_utf8(out.written()).unwrap_or("");
                verdict = verdict.set_header(seen, value);
            }
        }
        if end_of_stream {
            verdict = verdict.set_body(if inbound(direction) { b"in" } else { b"out" });
        }
        verdict
    }

    fn http_body(
        &mut self,
        _direction: Direction,
        body: &[u8],
        end_of_stream: bool,
    ) -> HttpVerdict {
        if let Some(rest) = body.strip_prefix(b"respond") {
            let teapot: &[u8] = if end_of_stream { b"end" } else { b"more" };
            return HttpVerdict::respond(418, rest)
                .set_header("x-teapot", teapot)
                .set_header("x-empty", b"");
        }
        if body.is_empty() {
            return HttpVerdict::forward();
        }
        let loud = &mut self.out[..body.len()];
        loud.copy_from_slice(body);
        loud.make_ascii_uppercase();
        HttpVerdict::forward().set_body(loud)
    }

    fn http_trailers(&mut self, direction: Direction, trailers: Fields<'_>) -> HttpVerdict {
        let side: &[u8] = if inbound(direction) { b"req" } else { b"resp" };
        trailers
            .iter()
            .fold(HttpVerdict::forward(), |verdict, (name, _)| {
                verdict.set_header(name, side)
            })
    }
}

hyperfilter::export!(static PROBE: Probe = Probe { out: [0; 4096] });
