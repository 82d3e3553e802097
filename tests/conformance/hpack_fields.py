"""HPACK representations made by hand (RFC 7541 §5, §6), valid and not, to add to a header
block that the `hpack` encoder made: the encoder itself only writes valid ones."""

from __future__ import annotations

from collections.abc import Iterable

import hpack
from hpack.hpack import encode_integer
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH

STATIC_ENTRIES = 61
USER_AGENT = 58  # the static table's ("user-agent", "")
EOS = 256  # the Huffman code's end-of-string symbol, never valid inside a string
# (first octet pattern, prefix bits) of each literal representation (§6.2)
INCREMENTAL_INDEXING = (0x40, 6)
WITHOUT_INDEXING = (0x00, 4)
NEVER_INDEXED = (0x10, 4)
Kind = tuple[int, int]


def integer(value: int, prefix_bits: int, pattern: int) -> bytes:
    """An integer with an N-bit prefix (§5.1) in the first octet's low bits."""
    encoded = encode_integer(value, prefix_bits)
    encoded[0] |= pattern
    return bytes(encoded)


def huffman(symbols: Iterable[int], padding_bit: int = 1, extra_octets: int = 0) -> bytes:
    """The Huffman code (§5.2) of `symbols` (octets, or EOS), padded to a whole octet with
    `padding_bit`s (valid padding is ones), then `extra_octets` octets of ones."""
    bits = count = 0
    for symbol in symbols:
        bits = bits << REQUEST_CODES_LENGTH[symbol] | REQUEST_CODES[symbol]
        count += REQUEST_CODES_LENGTH[symbol]
    pad = -count % 8
    bits = bits << pad | (((1 << pad) - 1) if padding_bit else 0)
    return (bits.to_bytes((count + pad) // 8, "big") if count else b"") + b"\xff" * extra_octets


def string(text: bytes, huffman_coded: bool = False) -> bytes:
    """A string literal (§5.2)."""
    if huffman_coded:
        return huffman_string(huffman(text))
    return integer(len(text), 7, 0) + text


def huffman_string(code: bytes) -> bytes:
    """A string literal flagged as Huffman-coded, whatever `code` holds."""
    return integer(len(code), 7, 0x80) + code


def indexed(index: int) -> bytes:
    """An indexed header field (§6.1)."""
    return integer(index, 7, 0x80)


def literal(kind: Kind, name: int | bytes, value: bytes) -> bytes:
    """A literal header field (§6.2) of `kind`: `name` is a table index or a string literal,
    `value` a string literal."""
    pattern, prefix_bits = kind
    if isinstance(name, int):
        return integer(name, prefix_bits, pattern) + value
    return integer(0, prefix_bits, pattern) + name + value


def table_size_update(size: int) -> bytes:
    """A dynamic table size update (§6.3)."""
    return integer(size, 5, 0x20)


def first_unused_index(encoder: hpack.Encoder) -> int:
    """The lowest index that names no entry, in the table `encoder` (and so the peer's
    decoder) holds now."""
    return STATIC_ENTRIES + len(encoder.header_table.dynamic_entries) + 1
