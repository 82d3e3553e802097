"""The redis-firewall example plugin's RESP reading, in the real wasmtime sandbox: it follows
the client's stream as Redis reads it (arrays of bulk strings, inline commands, any split into
segments), closes on a refused command in the segment that completes its name, passes values
that merely spell one, and closes a stream it cannot follow."""

from __future__ import annotations

import pytest

from sidecar.pod.resp import encode_command
from tests.conftest import Loader, RecordingMetrics
from vmm.events import FORWARD, Close, Direction, TcpData, Verdict
from vmm.sandbox import Sandbox

CLOSE = Close()


@pytest.fixture
def firewall(load_wasmtime: Loader) -> Sandbox:
    return load_wasmtime("redis-firewall").new_sandbox()


def send(sandbox: Sandbox, *segments: bytes) -> list[Verdict | None]:
    """Each segment as one data event from the client, until a verdict closes."""
    verdicts = []
    for segment in segments:
        verdicts.append(sandbox.deliver(TcpData(Direction.INBOUND, segment, False)))
        if verdicts[-1] == CLOSE:
            break
    return verdicts


ALLOWED = (encode_command("SET", "user:1", "alice") + encode_command("GET", "user:1")
           + encode_command("DEL", "user:1") + b"PING\r\n" + encode_command("INCR", "n"))


def test_ordinary_commands_pass_pipelined_and_one_byte_at_a_time(firewall: Sandbox) -> None:
    assert send(firewall, ALLOWED) == [FORWARD]
    assert set(send(firewall, *(ALLOWED[i:i + 1] for i in range(len(ALLOWED))))) == {FORWARD}


@pytest.mark.parametrize("command", [
    encode_command("FLUSHALL"),
    encode_command("flushall"),
    encode_command("FlushDB", "ASYNC"),
    encode_command("CONFIG", "SET", "dir", "/tmp"),
    encode_command("EVAL", "return redis.call('flushall')", "0"),
    b"FLUSHALL\r\n",
    b"flushall\n",
    b"  \t config get *\r\n",
])
def test_a_refused_command_closes(firewall: Sandbox, command: bytes,
                                  metrics: RecordingMetrics) -> None:
    assert send(firewall, command) == [CLOSE]
    assert metrics.counters["redis-firewall", "refused"] == 1


def test_the_segment_completing_the_name_closes_wherever_the_command_is_split(
        load_wasmtime: Loader) -> None:
    """Every split of a pipeline into two segments: the first segment passes while it holds
    only part of FLUSHALL's name, and the segment holding its last byte closes."""
    plugin = load_wasmtime("redis-firewall")
    allowed = encode_command("SET", "k", "v")
    stream = allowed + encode_command("FLUSHALL") + encode_command("GET", "k")
    name_end = stream.index(b"FLUSHALL") + len(b"FLUSHALL")
    for split in range(1, len(stream)):
        sandbox = plugin.new_sandbox()
        expected = [FORWARD, CLOSE] if split < name_end else [CLOSE]
        assert send(sandbox, stream[:split], stream[split:]) == expected, split
        sandbox.close()


def test_one_byte_segments_close_on_the_names_last_byte(firewall: Sandbox) -> None:
    stream = encode_command("GET", "k") + b"\r\n  FLUSHALL now\r\n"
    verdicts = send(firewall, *(stream[i:i + 1] for i in range(len(stream))))
    assert len(verdicts) == stream.index(b"FLUSHALL") + len(b"FLUSHALL") + 1  # the separator
    assert verdicts[-1] == CLOSE and set(verdicts[:-1]) == {FORWARD}


def test_values_that_spell_a_refused_command_pass(firewall: Sandbox) -> None:
    """Bulk strings are skipped by their declared length: a value holding a whole RESP
    command, even one larger than a segment, is only a value."""
    hidden = encode_command("FLUSHALL") * 1000
    stream = (encode_command("SET", "note", "FLUSHALL") + encode_command("SET", "blob", hidden)
              + encode_command("ECHO", "CONFIG") + b"GET FLUSHALL\r\n")
    segments = [stream[i:i + 4096] for i in range(0, len(stream), 4096)]
    assert set(send(firewall, *segments)) == {FORWARD}
    assert send(firewall, encode_command("FLUSHALL")) == [CLOSE]  # still following the stream


def test_empty_arrays_and_lines_are_skipped_as_redis_does(firewall: Sandbox) -> None:
    assert send(firewall, b"*0\r\n*-1\r\n\r\n\n   \r\n") == [FORWARD]
    assert send(firewall, encode_command("FLUSHALL")) == [CLOSE]


def test_names_longer_than_any_refused_one_pass(firewall: Sandbox) -> None:
    assert send(firewall, encode_command("FLUSHALL" * 8), b"FLUSHALLX\r\n") == [FORWARD] * 2


@pytest.mark.parametrize("stream", [
    b"*x\r\n",                          # not a number
    b"*01\r\n",                         # a leading zero (Redis's string2ll refuses it)
    b"*1\r\n:5\r\n",                    # an element that is not a bulk string
    b"*1\r\n$-1\r\n",                   # a negative length
    b"*1\r\n$536870913\r\n",            # past proto-max-bulk-len
    b"*" + b"1" * 21 + b"\r\n",         # no number is that long
    b'"FLUSHALL"\r\n',                  # a quoted inline name may spell anything
    b'FLUSH"ALL"\r\n',
    b"FLUSH\0ALL\r\n",
])
def test_a_stream_it_cannot_follow_is_closed(firewall: Sandbox, stream: bytes,
                                             metrics: RecordingMetrics) -> None:
    assert send(firewall, stream) == [CLOSE]
    assert metrics.counters["redis-firewall", "unparsable"] == 1


def test_the_replies_from_redis_pass_unread(firewall: Sandbox) -> None:
    reply = b"$8\r\nFLUSHALL\r\n*x garbage\r\n"
    assert firewall.deliver(TcpData(Direction.OUTBOUND, reply, False)) == FORWARD


def test_the_refused_names_come_from_the_config(load_wasmtime: Loader) -> None:
    sandbox = load_wasmtime("redis-firewall", config={"commands": "keys, SCAN"}).new_sandbox()
    assert send(sandbox, encode_command("FLUSHALL"), encode_command("GET", "k")) == [FORWARD] * 2
    assert send(sandbox, encode_command("scan", "0")) == [CLOSE]
