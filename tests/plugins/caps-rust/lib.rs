//! tests/plugins/caps/caps.c with the Rust SDK: every capability, driven by TCP commands.
#![no_std]

use hyperfilter::{Direction, Filter, Level, TcpVerdict};

/// Room for what a command answers.
struct Caps {
    out: [u8; 256],
}

/// The argument after the command, without a line end.
fn argument(data: &[u8], skip: usize) -> &str {
    let rest = data.get(skip..).unwrap_or(b"");
    let end = rest
        .iter()
        .rposition(|&b| b != b'\r' && b != b'\n')
        .map_or(0, |last| last + 1);
    core::str::from_utf8(&rest[..end]).unwrap_or("")
}

impl Caps {
    /// `bytes` (or "none") copied into `out`: what a capability lends lasts only its call.
    fn answer(&mut self, bytes: Option<&[u8]>) -> usize {
        let bytes = bytes.unwrap_or(b"none");
        self.out[..bytes.len()].copy_from_slice(bytes);
        bytes.len()
    }

    fn decimal(&mut self, value: i64) -> usize {
        let mut digits = [0u8; 20];
        let mut rest = value.unsigned_abs();
        let mut count = 0;
        loop {
            digits[count] = b'0' + (rest % 10) as u8;
            count += 1;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        let sign = usize::from(value < 0);
        self.out[0] = b'-';
        for i in 0..count {
            self.out[sign + i] = digits[count - 1 - i];
        }
        sign + count
    }
}

impl Filter for Caps {
    fn tcp_data<'a>(&'a mut self, direction: Direction, data: &'a [u8], _: bool) -> TcpVerdict<'a> {
        if direction != Direction::Inbound || data.is_empty() {
            return TcpVerdict::Forward;
        }
        let text = |answer: &'static str| TcpVerdict::Replace(answer.as_bytes());
        let length = if data.starts_with(b"config ") {
            let key = argument(data, 7);
            hyperfilter::config(key, |value| self.answer(value.map(str::as_bytes)))
        } else if data.starts_with(b"clock") {
            let (wall, first) = (hyperfilter::now(), hyperfilter::monotonic());
            let second = hyperfilter::monotonic();
            return text(if wall > 1_600_000_000_000_000_000 && second >= first {
                "ok"
            } else {
                "bad"
            });
        } else if data.starts_with(b"random ") {
            let mut bytes = [0u8; 64];
            let count = argument(data, 7)
                .parse::<usize>()
                .unwrap_or(0)
                .min(bytes.len());
            hyperfilter::fill_random(&mut bytes[..count]);
            for (i, byte) in bytes[..count].iter().enumerate() {
                self.out[2 * i] = b"0123456789abcdef"[usize::from(byte >> 4)];
                self.out[2 * i + 1] = b"0123456789abcdef"[usize::from(byte & 15)];
            }
            2 * count
        } else if data.starts_with(b"count ") {
            match hyperfilter::state_increment(argument(data, 6), 1, 0) {
                Ok(total) => self.decimal(total),
                Err(_) => return text("quota"),
            }
        } else if data.starts_with(b"get ") {
            hyperfilter::state_get(argument(data, 4), |value| self.answer(value))
        } else if data.starts_with(b"set ") {
            return text(match argument(data, 4).split_once(' ') {
                None => "usage",
                Some((key, value)) => match hyperfilter::state_set(key, value.as_bytes(), 0) {
                    Ok(()) => "ok",
                    Err(_) => "quota",
                },
            });
        } else if data.starts_with(b"del ") {
            hyperfilter::state_delete(argument(data, 4));
            return text("ok");
        } else if data.starts_with(b"metric") {
            hyperfilter::metric_add("hits", 1);
            hyperfilter::metric_set("level", -7);
            return text("ok");
        } else if data.starts_with(b"badmetric") {
            hyperfilter::metric_add("undeclared", 1);
            return text("ok");
        } else if data.starts_with(b"log") {
            hyperfilter::log(Level::Info, "caps plugin says hello\nforged line");
            return text("ok");
        } else {
            return TcpVerdict::Forward;
        };
        TcpVerdict::Replace(&self.out[..length])
    }
}

hyperfilter::export!(static CAPS: Caps = Caps { out: [0; 256] });
