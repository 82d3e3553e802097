"""HeaderBlockDecoder: the same headers as hpack's own decoder, block after block, whatever the
blocks do to the dynamic table; remembered only while they cannot change it."""

from __future__ import annotations

import hpack
import pytest

from sidecar.header_blocks import HeaderBlockDecoder, leaves_table_alone

ENVOY_PATH = "/envoy.service.network_ext_proc.v3.NetworkExternalProcessor/Process"


def never_indexed_path(path: str) -> list:
    """What Envoy sends: `:path` as a literal it never indexes, the rest indexable."""
    return [(":method", "POST"), hpack.NeverIndexedHeaderTuple(":path", path),
            (":authority", "hyperfilter"), ("te", "trailers"),
            ("x-hyperfilter-chain", "bench")]


def test_every_block_decodes_as_hpack_decodes_it() -> None:
    encoder, reference, decoder = hpack.Encoder(), hpack.Decoder(), HeaderBlockDecoder(1 << 16)
    header_lists = [never_indexed_path(ENVOY_PATH)] * 3 + [
        [*never_indexed_path(ENVOY_PATH), ("x-request-id", str(n))] for n in range(3)] + [
        never_indexed_path(ENVOY_PATH), never_indexed_path("/other"),
        never_indexed_path(ENVOY_PATH)]
    blocks = []
    for headers in header_lists:
        block = encoder.encode(headers)
        blocks.append(block)
        expected = tuple((str(k), str(v)) for k, v in reference.decode(block))
        assert decoder.decode(block) == expected
    assert blocks[1] == blocks[2] and leaves_table_alone(blocks[1])
    assert not leaves_table_alone(blocks[0])  # the first one indexes what it sends


def test_a_block_that_changes_the_table_forgets_what_was_remembered() -> None:
    """An indexed field's meaning depends on the table: after a block that changes it, the
    same bytes may decode differently, and must not be answered from memory."""
    encoder, decoder = hpack.Encoder(), HeaderBlockDecoder(1 << 16)
    decoder.decode(encoder.encode([("x-a", "1")]))  # indexes x-a: 1 at dynamic index 62
    indexed_62 = bytes([0x80 | 62])
    assert decoder.decode(indexed_62) == (("x-a", "1"),)
    decoder.decode(encoder.encode([("x-b", "2")]))  # indexes x-b: 2 at 62, x-a moves to 63
    assert decoder.decode(indexed_62) == (("x-b", "2"),)


@pytest.mark.parametrize(("block", "alone"), [
    (bytes([0x82, 0x86]), True),  # indexed fields only
    (bytes([0x04, 0x01]) + b"/", True),  # literal without indexing, indexed name
    (bytes([0x10, 0x01]) + b"a" + bytes([0x01]) + b"b", True),  # never indexed, literal name
    (bytes([0x44, 0x01]) + b"/", False),  # incremental indexing
    (bytes([0x3F, 0xE1, 0x1F]), False),  # dynamic table size update
    (bytes([0x04, 0x7F, 0xFF, 0x7F]), False),  # a length past the end of the block
    (bytes([0xFF]), False),  # an index cut short
])
def test_which_blocks_leave_the_table_alone(block: bytes, alone: bool) -> None:
    assert leaves_table_alone(block) is alone


def test_a_broken_block_raises_as_hpack_does_and_is_not_remembered() -> None:
    decoder = HeaderBlockDecoder(1 << 16)
    for _ in range(2):
        with pytest.raises(hpack.HPACKError):
            decoder.decode(bytes([0x80 | 100]))  # no such index
