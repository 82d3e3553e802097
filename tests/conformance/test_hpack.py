"""h2spec's "hpack" section: field blocks that break RFC 7541 are connection errors of type
COMPRESSION_ERROR (RFC 9113 §4.3): indexes that name nothing (§2.3.3, §6.1), dynamic table size
updates out of place or over the limit (§4.2, §6.3), invalid Huffman strings (§5.2). Each is
one more representation before or after the gRPC request's own block."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from hyperframe.frame import HeadersFrame

from tests.conformance import hpack_fields as hf
from tests.conformance.raw_client import DEFAULT_TABLE_SIZE, RawClient, header_flags

NAME = hf.string(b"x-test")
VALUE = b"test"  # its Huffman code is 20 bits: the last octet has 4 bits of padding
Block = Callable[[RawClient], bytes]


def after_the_request(make: Callable[[RawClient], bytes]) -> Block:
    """The request's block, then what `make` builds (knowing the table the block left)."""
    def block(client: RawClient) -> bytes:
        request = client.block(client.request_headers())
        return request + make(client)
    return block


def before_the_request(make: Callable[[RawClient], bytes]) -> Block:
    def block(client: RawClient) -> bytes:
        return make(client) + client.block(client.request_headers())
    return block


def invalid_huffman_value(code: bytes) -> Block:
    """A literal field whose value is flagged Huffman-coded and holds `code`."""
    return after_the_request(
        lambda client: hf.literal(hf.WITHOUT_INDEXING, NAME, hf.huffman_string(code)))


def over_the_table_size(client: RawClient) -> bytes:
    """A size update one octet over the server's SETTINGS_HEADER_TABLE_SIZE."""
    limit = client.server_settings.get(SettingCodes.HEADER_TABLE_SIZE, DEFAULT_TABLE_SIZE)
    return hf.table_size_update(limit + 1)


@pytest.mark.parametrize("block", [
    pytest.param(after_the_request(lambda client: hf.indexed(hf.first_unused_index(
        client.encoder))), id="hpack/2.3.3/1"),
    pytest.param(after_the_request(lambda client: hf.literal(
        hf.INCREMENTAL_INDEXING, hf.first_unused_index(client.encoder), hf.string(b""))),
                 id="hpack/2.3.3/2"),
    pytest.param(after_the_request(lambda client: hf.table_size_update(1)), id="hpack/4.2/1"),
    pytest.param(invalid_huffman_value(hf.huffman(VALUE, extra_octets=1)), id="hpack/5.2/1"),
    pytest.param(invalid_huffman_value(hf.huffman(VALUE, padding_bit=0)), id="hpack/5.2/2"),
    pytest.param(invalid_huffman_value(hf.huffman([*b"te", hf.EOS, *b"st"])), id="hpack/5.2/3"),
    pytest.param(after_the_request(lambda client: hf.indexed(0)), id="hpack/6.1/1"),
    pytest.param(before_the_request(over_the_table_size), id="hpack/6.3/1"),
])
def test_invalid_field_blocks_are_compression_errors(client: RawClient, block: Block) -> None:
    """An index past the static and dynamic tables, as a field or as a literal's name; a size
    update after a field; Huffman padding of more than 7 bits, of zeros, or an EOS inside the
    string; index 0; a size update over the decoder's limit."""
    client.send(HeadersFrame(1, block(client), flags=header_flags(end_stream=True)))
    client.expect_connection_error(ErrorCodes.COMPRESSION_ERROR)
