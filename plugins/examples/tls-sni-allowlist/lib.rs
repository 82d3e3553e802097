//! tls-sni-allowlist: lets a TLS connection through only when the server name its ClientHello
//! asks for is on the allow-list, without terminating TLS. Until the name is known the
//! client's bytes are held back (at most MAX_BUFFERED of them); then they go upstream in one
//! piece, or the connection is closed, with a fatal TLS alert where the client speaks TLS:
//! - unrecognized_name: a name not on the list, not a valid host name, or none at all;
//! - decode_error: a malformed ClientHello, one larger than MAX_HELLO, or a client that ends
//!   its side before the ClientHello is complete;
//! - no alert, a plain close: bytes that are no TLS handshake record.
//! The server's bytes, and everything after an allowed ClientHello, pass unread.
#![no_std]

mod allow_list;
mod client_hello;

use allow_list::Entry;
use client_hello::{ClientHello, MAX_HELLO};
use hyperfilter::{Direction, Filter, Level, TcpVerdict};

/// What the client may send before the decision: the ClientHello's records (more than
/// MAX_HELLO when it is split into many small records) and what follows them in the same
/// segments (such as 0-RTT data).
const MAX_BUFFERED: usize = MAX_HELLO + 4 * 1024;

/// Why a connection is closed: what the client is told, and the counter it adds to.
enum Refusal {
    /// Bytes that are no TLS: closed without a word of TLS.
    NotTls,
    /// A ClientHello that cannot be read whole: decode_error.
    Malformed,
    /// No name, or one not allowed: unrecognized_name.
    Name,
}

impl Refusal {
    /// A fatal alert (RFC 8446 6): a record of type 21, version 3.3, length 2, level 2 and
    /// the description; none for a client that does not speak TLS.
    fn alert(&self) -> &'static [u8] {
        match self {
            Refusal::NotTls => &[],
            Refusal::Malformed => &[21, 3, 3, 0, 2, 2, 50],
            Refusal::Name => &[21, 3, 3, 0, 2, 2, 112],
        }
    }

    fn counter(&self) -> &'static str {
        match self {
            Refusal::NotTls | Refusal::Malformed => "malformed",
            Refusal::Name => "refused",
        }
    }
}

enum Phase {
    Reading,
    Allowed,
    Refused,
}

struct Connection {
    phase: Phase,
    buffered: [u8; MAX_BUFFERED],
    length: usize,
    joined: [u8; MAX_HELLO],
}

impl Filter for Connection {
    fn tcp_data<'a>(
        &'a mut self,
        direction: Direction,
        data: &'a [u8],
        end_of_stream: bool,
    ) -> TcpVerdict<'a> {
        if direction == Direction::Outbound {
            return TcpVerdict::Forward;
        }
        match self.phase {
            Phase::Allowed => TcpVerdict::Forward,
            Phase::Refused => TcpVerdict::Close,
            Phase::Reading => self.read(data, end_of_stream),
        }
    }
}

impl Connection {
    const fn new() -> Self {
        Self {
            phase: Phase::Reading,
            buffered: [0; MAX_BUFFERED],
            length: 0,
            joined: [0; MAX_HELLO],
        }
    }

    fn read(&mut self, data: &[u8], end_of_stream: bool) -> TcpVerdict<'_> {
        let phase = &mut self.phase;
        if data.len() > MAX_BUFFERED - self.length {
            return refuse(
                phase,
                Refusal::Malformed,
                &[b"closed: a ClientHello larger than this filter reads"],
            );
        }
        self.buffered[self.length..self.length + data.len()].copy_from_slice(data);
        self.length += data.len();
        let stream = &self.buffered[..self.length];
        match client_hello::read(stream, &mut self.joined) {
            ClientHello::Incomplete if end_of_stream => refuse(
                phase,
                Refusal::Malformed,
                &[b"closed: the client ended its side inside its ClientHello"],
            ),
            // Nothing goes upstream before the name is known.
            ClientHello::Incomplete => TcpVerdict::Replace(&[]),
            ClientHello::NotTls => refuse(
                phase,
                Refusal::NotTls,
                &[b"closed: the client's first bytes are no TLS handshake"],
            ),
            ClientHello::Malformed(what) => refuse(
                phase,
                Refusal::Malformed,
                &[b"closed: a malformed ClientHello: ", what.as_bytes()],
            ),
            ClientHello::Complete(None) => refuse(
                phase,
                Refusal::Name,
                &[b"refused a ClientHello without a server name"],
            ),
            ClientHello::Complete(Some(name)) if !allow_list::is_host_name(name) => refuse(
                phase,
                Refusal::Name,
                &[b"refused a server name that is no host name"],
            ),
            ClientHello::Complete(Some(name)) if !allowed(name) => {
                refuse(phase, Refusal::Name, &[b"refused server name ", name])
            }
            ClientHello::Complete(Some(_)) => {
                *phase = Phase::Allowed;
                hyperfilter::metric_add("allowed", 1);
                TcpVerdict::Replace(stream)
            }
        }
    }
}

fn allowed(name: &[u8]) -> bool {
    hyperfilter::config("allow", |list| {
        allow_list::entries(list.unwrap_or("")).any(|entry| {
            if let Entry::Invalid(text) = entry {
                log(
                    Level::Warn,
                    &[
                        b"allow-list entry ",
                        text,
                        b" is neither a host name nor *.host-name: it matches nothing",
                    ],
                );
            }
            allow_list::matches(&entry, name)
        })
    })
}

/// Close the connection, telling the client as `refusal` says; count it and log `why`.
fn refuse<'a>(phase: &mut Phase, refusal: Refusal, why: &[&[u8]]) -> TcpVerdict<'a> {
    *phase = Phase::Refused;
    hyperfilter::metric_add(refusal.counter(), 1);
    log(Level::Info, why);
    match refusal.alert() {
        [] => TcpVerdict::Close,
        alert => TcpVerdict::AnswerAndClose(alert),
    }
}

/// Log the concatenation of `parts` (cut at 320 bytes).
fn log(level: Level, parts: &[&[u8]]) {
    let mut message = [0u8; 320];
    let mut length = 0;
    for part in parts {
        let taken = part.len().min(message.len() - length);
        message[length..length + taken].copy_from_slice(&part[..taken]);
        length += taken;
    }
    let text = match core::str::from_utf8(&message[..length]) {
        Ok(text) => text,
        Err(cut) => core::str::from_utf8(&message[..cut.valid_up_to()]).unwrap_or(""),
    };
    hyperfilter::log(level, text);
}

// Every connection's sandbox starts reading a ClientHello.
hyperfilter::export!(static CONNECTION: Connection = Connection::new());
