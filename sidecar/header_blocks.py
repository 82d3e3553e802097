"""HPACK decoding that remembers header blocks which leave the dynamic table alone.

Envoy opens every ext_proc stream with the same header block: fields it indexed earlier, and
the `:path` as a Huffman-coded literal it never indexes. The `hpack` library decodes that
literal in Python, about 100 µs per stream here. A block made only of indexed fields and
literals without indexing cannot change the decoder's dynamic table, so while the table
stays as it is the same bytes decode to the same headers: those are remembered. A block that
changes the table (or that this module cannot walk) goes to the decoder as usual and forgets
everything remembered, since indexed fields may now mean something else.
"""

from __future__ import annotations

import hpack

Headers = tuple[tuple[str, str], ...]
REMEMBERED_BLOCKS = 64


class HeaderBlockDecoder:
    def __init__(self, max_header_list_size: int) -> None:
        self._decoder = hpack.Decoder()
        self._decoder.max_header_list_size = max_header_list_size
        self._remembered: dict[bytes, Headers] = {}

    def decode(self, block: bytes) -> Headers:
        """The block's headers; raises hpack.HPACKError as hpack.Decoder does."""
        remembered = self._remembered.get(block)
        if remembered is not None:
            return remembered
        keeps_table = leaves_table_alone(block)
        if not keeps_table:
            self._remembered.clear()
        headers = tuple((str(name), str(value)) for name, value in self._decoder.decode(block))
        if keeps_table:
            if len(self._remembered) >= REMEMBERED_BLOCKS:
                self._remembered.clear()
            self._remembered[block] = headers
        return headers


def leaves_table_alone(block: bytes) -> bool:
    """Whether every field of `block` is indexed or a literal without indexing (RFC 7541,
    6.1 and 6.2.2-6.2.3): no incremental indexing, no table size update. False as well for a
    block too short for what it announces (the decoder will say what is wrong)."""
    at, end = 0, len(block)
    try:
        while at < end:
            first = block[at]
            if first & 0x80:  # indexed field
                at = _skip_integer(block, at, 7)
            elif first & 0xC0 == 0x40 or first & 0xE0 == 0x20:  # indexing, or a size update
                return False
            else:  # literal without indexing or never indexed: a name index, maybe a name
                name_index = first & 0x0F
                at = _skip_integer(block, at, 4)
                if name_index == 0:
                    at = _skip_string(block, at)
                at = _skip_string(block, at)
    except IndexError:
        return False
    return at == end


def _integer(block: bytes, at: int, prefix_bits: int) -> tuple[int, int]:
    """An integer with an N-bit prefix (RFC 7541, 5.1), and where the block goes on."""
    mask = (1 << prefix_bits) - 1
    value = block[at] & mask
    at += 1
    if value < mask:
        return value, at
    shift = 0
    while True:
        byte = block[at]
        value += (byte & 0x7F) << shift
        shift += 7
        at += 1
        if not byte & 0x80:
            return value, at


def _skip_integer(block: bytes, at: int, prefix_bits: int) -> int:
    return _integer(block, at, prefix_bits)[1]


def _skip_string(block: bytes, at: int) -> int:
    """Past a string literal: its length (7-bit prefix, after the Huffman flag), then it."""
    length, at = _integer(block, at, 7)
    if at + length > len(block):
        raise IndexError("string past the end of the block")
    return at + length
