//! The allow-list from the plugin's config: entries separated by commas or spaces, each a host
//! name (exact) or `*.` and a host name (any name below it, at any depth, not the name itself).
//! Names compare without regard to ASCII case, as DNS does.

/// Whether `name` is a host name as a ClientHello must carry it (RFC 6066 3): letters, digits
/// and hyphens in dot-separated labels of 1 to 63 bytes, at most 253 bytes, no trailing dot.
/// (An internationalised name travels as its "xn--" A-labels.)
pub fn is_host_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split(|&b| b == b'.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.first() != Some(&b'-')
                && label.last() != Some(&b'-')
                && label
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

pub enum Entry<'a> {
    Exact(&'a [u8]),
    Below(&'a [u8]), // `*.example.com`: the part after "*."
    /// Neither: it matches nothing (so a typo refuses rather than allows).
    Invalid(&'a [u8]),
}

pub fn entries(list: &str) -> impl Iterator<Item = Entry<'_>> {
    list.as_bytes()
        .split(|&b| b == b',' || b.is_ascii_whitespace())
        .filter(|e| !e.is_empty())
        .map(|entry| match entry.strip_prefix(b"*.") {
            Some(parent) if is_host_name(parent) => Entry::Below(parent),
            None if is_host_name(entry) => Entry::Exact(entry),
            _ => Entry::Invalid(entry),
        })
}

pub fn matches(entry: &Entry<'_>, name: &[u8]) -> bool {
    match *entry {
        Entry::Exact(allowed) => name.eq_ignore_ascii_case(allowed),
        Entry::Below(parent) => {
            name.len() > parent.len() + 1 && {
                let (child_and_dot, rest) = name.split_at(name.len() - parent.len());
                child_and_dot.ends_with(b".") && rest.eq_ignore_ascii_case(parent)
            }
        }
        Entry::Invalid(_) => false,
    }
}
