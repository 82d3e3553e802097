//! The server name a TLS client asks for, read from the first bytes it sends: the ClientHello
//! (RFC 8446 4.1.2; TLS 1.0 to 1.2 share its layout), carried in handshake records that may
//! split it anywhere, its server_name extension (RFC 6066 3). Strict where a lax reading
//! could see another name than the server will: one server_name extension with one host
//! name, every length consistent with the one around it.

/// The most a ClientHello may take, its 4-byte header included: enough for post-quantum key
/// shares and many extensions (a browser's is under 2 KiB), and a bound on what is buffered.
pub const MAX_HELLO: usize = 16 * 1024;
/// The largest record TLS allows (RFC 8446 5.1).
const MAX_RECORD: usize = 1 << 14;
const RECORD_HEADER: usize = 5;
const HANDSHAKE_RECORD: u8 = 22;
const CLIENT_HELLO: u8 = 1;
const SERVER_NAME_EXTENSION: u16 = 0;
const HOST_NAME: u8 = 0;

pub enum ClientHello<'a> {
    /// The bytes so far are a ClientHello's beginning.
    Incomplete,
    /// The client does not speak TLS (its first bytes are no handshake record).
    NotTls,
    /// What is wrong with it.
    Malformed(&'static str),
    /// Complete and well-formed; the host name it asks for, if any.
    Complete(Option<&'a [u8]>),
}

/// Read the ClientHello from `stream`, every byte the client has sent so far; its records'
/// payloads are joined in `joined`.
pub fn read<'a>(stream: &[u8], joined: &'a mut [u8; MAX_HELLO]) -> ClientHello<'a> {
    let mut offset = 0;
    let mut have = 0;
    loop {
        let header = &stream[offset..stream.len().min(offset + RECORD_HEADER)];
        // Judged as soon as each byte arrives: a client that is not speaking TLS is told
        // apart by its first byte.
        if header
            .first()
            .map_or(false, |&kind| kind != HANDSHAKE_RECORD)
            || header.get(1).map_or(false, |&major| major != 3)
        {
            return if offset == 0 {
                ClientHello::NotTls
            } else {
                ClientHello::Malformed("a record inside it is no handshake record")
            };
        }
        if header.len() < RECORD_HEADER {
            return ClientHello::Incomplete;
        }
        let length = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if length == 0 || length > MAX_RECORD {
            return ClientHello::Malformed("a record length out of bounds");
        }
        // What has arrived of the record is read at once: a ClientHello too large is refused
        // on its header, and one that ends inside a record needs no more of it.
        let start = offset + RECORD_HEADER;
        let arrived = &stream[start..stream.len().min(start + length)];
        let taken = arrived.len().min(MAX_HELLO - have);
        joined[have..have + taken].copy_from_slice(&arrived[..taken]);
        have += taken;
        if have >= 4 {
            if joined[0] != CLIENT_HELLO {
                return ClientHello::Malformed("the first handshake message is no ClientHello");
            }
            let size = 4
                + (usize::from(joined[1]) << 16
                    | usize::from(joined[2]) << 8
                    | usize::from(joined[3]));
            if size > MAX_HELLO {
                return ClientHello::Malformed("a ClientHello larger than this filter reads");
            }
            if have >= size {
                return match server_name(&joined[4..size]) {
                    Ok(name) => ClientHello::Complete(name),
                    Err(what) => ClientHello::Malformed(what),
                };
            }
        }
        if arrived.len() < length {
            return ClientHello::Incomplete;
        }
        offset = start + length;
    }
}

/// The host name of a ClientHello's body (after its handshake header).
fn server_name(body: &[u8]) -> Result<Option<&[u8]>, &'static str> {
    let mut hello = Reader(body);
    let version = hello.u16().ok_or("a truncated version")?;
    if version >> 8 != 3 {
        return Err("an unknown version");
    }
    hello.take(32).ok_or("a truncated random")?;
    if hello.vec8().ok_or("a truncated session id")?.len() > 32 {
        return Err("a session id longer than 32 bytes");
    }
    let suites = hello.vec16().ok_or("truncated cipher suites")?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err("a cipher suite list of odd or no length");
    }
    if hello
        .vec8()
        .ok_or("truncated compression methods")?
        .is_empty()
    {
        return Err("no compression method");
    }
    if hello.is_empty() {
        return Ok(None); // no extensions at all (TLS 1.0 allows it)
    }
    let mut extensions = Reader(hello.vec16().ok_or("truncated extensions")?);
    if !hello.is_empty() {
        return Err("bytes after its extensions");
    }
    let mut name = None;
    while !extensions.is_empty() {
        let kind = extensions.u16().ok_or("a truncated extension")?;
        let data = extensions.vec16().ok_or("a truncated extension")?;
        if kind == SERVER_NAME_EXTENSION {
            if name.is_some() {
                return Err("two server_name extensions");
            }
            name = Some(host_name(data)?);
        }
    }
    Ok(name)
}

/// The one host name of a server_name extension's data.
fn host_name(data: &[u8]) -> Result<&[u8], &'static str> {
    let mut extension = Reader(data);
    let mut names = Reader(extension.vec16().ok_or("a truncated server name list")?);
    if !extension.is_empty() {
        return Err("bytes after its server name list");
    }
    if names.u8().ok_or("an empty server name list")? != HOST_NAME {
        return Err("a server name that is no host name");
    }
    let name = names.vec16().ok_or("a truncated server name")?;
    if !names.is_empty() {
        return Err("more than one server name");
    }
    Ok(name)
}

/// Big-endian fields and length-prefixed vectors, front to back; None when too few bytes are
/// left.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Option<&'a [u8]> {
        if count > self.0.len() {
            return None;
        }
        let (taken, rest) = self.0.split_at(count);
        self.0 = rest;
        Some(taken)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    fn vec8(&mut self) -> Option<&'a [u8]> {
        let length = self.u8()?;
        self.take(usize::from(length))
    }

    fn vec16(&mut self) -> Option<&'a [u8]> {
        let length = self.u16()?;
        self.take(usize::from(length))
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
