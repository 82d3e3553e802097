"""The redis-firewall example plugin's RESP reading, in the real wasmtime sandbox: it follows
the client's stream as Redis reads it (arrays of bulk strings, inline commands, any split into
segments), answers a refused command in the segment that completes its name, keeping the
connection open when its reply takes the command's place and closing it otherwise, passes
values that merely spell one, and closes a stream it cannot follow."""

from __future__ import annotations

import pytest

from sidecar.pod.resp import encode_command
from tests.conftest import Loader, RecordingMetrics
from vmm.events import (
    FORWARD,
    Answer,
    AnswerAndClose,
    Close,
    Direction,
    Replace,
    TcpData,
    Verdict,
)
from vmm.sandbox import Sandbox

PROTOCOL_ERROR = AnswerAndClose(b"-ERR Protocol error: not a command as Redis reads one\r\n")


def refusal(name: bytes) -> bytes:
    return b"-ERR " + name + b" is not allowed\r\n"


def closes(verdict: Verdict | None) -> bool:
    return isinstance(verdict, AnswerAndClose | Close)


@pytest.fixture
def firewall(load_wasmtime: Loader) -> Sandbox:
    return load_wasmtime("redis-firewall").new_sandbox()


def send(sandbox: Sandbox, *segments: bytes) -> list[Verdict | None]:
    """Each segment as one data event from the client, until a verdict closes."""
    verdicts = []
    for segment in segments:
        verdicts.append(sandbox.deliver(TcpData(Direction.INBOUND, segment, False)))
        if closes(verdicts[-1]):
            break
    return verdicts


def reply(sandbox: Sandbox, data: bytes) -> None:
    """Bytes from Redis toward the client: they pass."""
    assert sandbox.deliver(TcpData(Direction.OUTBOUND, data, False)) == FORWARD


ALLOWED = (encode_command("SET", "user:1", "alice") + encode_command("GET", "user:1")
           + encode_command("DEL", "user:1") + b"PING\r\n" + encode_command("INCR", "n"))


def test_ordinary_commands_pass_pipelined_and_one_byte_at_a_time(firewall: Sandbox) -> None:
    assert send(firewall, ALLOWED) == [FORWARD]
    assert set(send(firewall, *(ALLOWED[i:i + 1] for i in range(len(ALLOWED))))) == {FORWARD}


@pytest.mark.parametrize(("command", "name"), [
    (encode_command("FLUSHALL"), b"FLUSHALL"),
    (encode_command("flushall"), b"FLUSHALL"),
    (encode_command("FlushDB", "ASYNC"), b"FLUSHDB"),
    (encode_command("CONFIG", "SET", "dir", "/tmp"), b"CONFIG"),
    (encode_command("EVAL", "return redis.call('flushall')", "0"), b"EVAL"),
    (b"FLUSHALL\r\n", b"FLUSHALL"),
    (b"flushall\n", b"FLUSHALL"),
    (b"  \t config get *\r\n", b"CONFIG"),
])
def test_a_close_on_command_is_answered_and_closed(firewall: Sandbox, command: bytes,
                                                   name: bytes,
                                                   metrics: RecordingMetrics) -> None:
    assert send(firewall, command) == [AnswerAndClose(refusal(name))]
    assert metrics.counters["redis-firewall", "refused"] == 1


def test_the_segment_completing_the_name_closes_wherever_the_command_is_split(
        load_wasmtime: Loader) -> None:
    """Every split of a pipeline into two segments: the first segment passes while it holds
    only part of FLUSHALL's name, and the segment holding its last byte closes."""
    plugin = load_wasmtime("redis-firewall")
    allowed = encode_command("SET", "k", "v")
    stream = allowed + encode_command("FLUSHALL") + encode_command("GET", "k")
    name_end = stream.index(b"FLUSHALL") + len(b"FLUSHALL")
    closed = AnswerAndClose(refusal(b"FLUSHALL"))
    for split in range(1, len(stream)):
        sandbox = plugin.new_sandbox()
        expected = [FORWARD, closed] if split < name_end else [closed]
        assert send(sandbox, stream[:split], stream[split:]) == expected, split
        sandbox.close()


def test_one_byte_segments_close_on_the_names_last_byte(firewall: Sandbox) -> None:
    stream = encode_command("GET", "k") + b"\r\n  FLUSHALL now\r\n"
    verdicts = send(firewall, *(stream[i:i + 1] for i in range(len(stream))))
    assert len(verdicts) == stream.index(b"FLUSHALL") + len(b"FLUSHALL") + 1  # the separator
    assert verdicts[-1] == AnswerAndClose(refusal(b"FLUSHALL"))
    assert set(verdicts[:-1]) == {FORWARD}


def test_values_that_spell_a_refused_command_pass(firewall: Sandbox) -> None:
    """Bulk strings are skipped by their declared length: a value holding a whole RESP
    command, even one larger than a segment, is only a value."""
    hidden = encode_command("FLUSHALL") * 1000
    stream = (encode_command("SET", "note", "FLUSHALL") + encode_command("SET", "blob", hidden)
              + encode_command("ECHO", "CONFIG") + b"GET FLUSHALL\r\n")
    segments = [stream[i:i + 4096] for i in range(0, len(stream), 4096)]
    assert set(send(firewall, *segments)) == {FORWARD}
    # still following the stream
    assert send(firewall, encode_command("FLUSHALL")) == [AnswerAndClose(refusal(b"FLUSHALL"))]


def test_empty_arrays_and_lines_are_skipped_as_redis_does(firewall: Sandbox) -> None:
    assert send(firewall, b"*0\r\n*-1\r\n\r\n\n   \r\n") == [FORWARD]
    assert send(firewall, encode_command("FLUSHALL")) == [AnswerAndClose(refusal(b"FLUSHALL"))]


def test_a_command_not_allowed_is_answered_in_its_place(firewall: Sandbox) -> None:
    """Nothing outstanding: the -ERR takes the command's place, the connection stays open,
    and a later refusal does the same once Redis has answered what came between."""
    assert send(firewall, encode_command("KEYS", "*")) == [Answer(refusal(b"KEYS"))]
    assert send(firewall, encode_command("GET", "k")) == [FORWARD]
    reply(firewall, b"$5\r\nvalue\r\n")
    assert send(firewall, b"keys user:*\r\n") == [Answer(refusal(b"KEYS"))]


def test_a_refusal_while_replies_are_outstanding_closes(firewall: Sandbox) -> None:
    """An -ERR now would reach the client before the replies it waits for."""
    assert send(firewall, encode_command("GET", "k")) == [FORWARD]
    assert send(firewall, encode_command("KEYS", "*")) == [AnswerAndClose(refusal(b"KEYS"))]


def test_the_replies_are_counted_whatever_their_shape_and_split(load_wasmtime: Loader) -> None:
    """Six commands, six replies of every RESP2 shape, one byte at a time: the refusal is
    answered in place only once the last byte of the last reply has come."""
    plugin = load_wasmtime("redis-firewall")
    commands = b"".join(encode_command(*c) for c in (
        ("GET", "k"), ("HGETALL", "h"), ("LPOP", "l"), ("SET", "k", "v"), ("INCR", "n"),
        ("EXEC",)))
    replies = (b"$3\r\nabc\r\n" b"*2\r\n$1\r\nf\r\n$0\r\n\r\n" b"$-1\r\n" b"+OK\r\n"
               b":7\r\n" b"*2\r\n*1\r\n:1\r\n*-1\r\n")
    for replied, expected in ((replies[:-1], AnswerAndClose), (replies, Answer)):
        sandbox = plugin.new_sandbox()
        assert send(sandbox, commands) == [FORWARD]
        for i in range(len(replied)):
            reply(sandbox, replied[i:i + 1])
        assert send(sandbox, encode_command("KEYS", "*")) == [expected(refusal(b"KEYS"))]


def test_replies_it_cannot_count_make_every_refusal_close(firewall: Sandbox) -> None:
    assert send(firewall, encode_command("HELLO", "3")) == [FORWARD]
    reply(firewall, b"%1\r\n+server\r\n+redis\r\n")  # RESP3: not counted
    assert send(firewall, encode_command("KEYS", "*")) == [AnswerAndClose(refusal(b"KEYS"))]


def test_a_pipelined_refusal_closes(load_wasmtime: Loader) -> None:
    """An answer drops its event's bytes: a command after the refused one would be lost,
    one before it answered after the -ERR."""
    plugin = load_wasmtime("redis-firewall")
    keys, get = encode_command("KEYS", "*"), encode_command("GET", "k")
    for stream in (keys + get, get + keys):
        assert send(plugin.new_sandbox(), stream) == [AnswerAndClose(refusal(b"KEYS"))]


def test_a_refused_command_is_dropped_to_its_end_across_events(firewall: Sandbox) -> None:
    command = encode_command("KEYS", "user:*")
    name_end = command.index(b"KEYS") + 4
    assert send(firewall, command[:name_end]) == [Answer(refusal(b"KEYS"))]
    rest = command[name_end:]
    assert send(firewall, rest[:3]) == [Replace(b"")]
    assert send(firewall, rest[3:] + b"PING\r\n") == [Replace(b"PING\r\n")]


def test_a_refused_command_whose_start_reached_redis_closes(firewall: Sandbox) -> None:
    assert send(firewall, b"*2\r\n$4\r\nKE") == [FORWARD]
    assert send(firewall, b"YS\r\n$1\r\n*\r\n") == [AnswerAndClose(refusal(b"KEYS"))]


def test_names_are_shown_safely(firewall: Sandbox) -> None:
    """A refused name is the client's bytes: the reply shows only plain ones."""
    assert send(firewall, encode_command("KE\r\n+OK\r\nYS")) == [
        Answer(refusal(b"KE???OK??YS"))]
    long = send(firewall, encode_command("FLUSHALL" * 8))
    assert long == [Answer(refusal(b"FLUSHALL" * 4 + b"..."))]  # no allowed name is that long


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
    assert send(firewall, stream) == [PROTOCOL_ERROR]
    assert metrics.counters["redis-firewall", "unparsable"] == 1


def test_the_replies_from_redis_pass_unread(firewall: Sandbox) -> None:
    reply = b"$8\r\nFLUSHALL\r\n*x garbage\r\n"
    assert firewall.deliver(TcpData(Direction.OUTBOUND, reply, False)) == FORWARD


def test_the_allowed_and_closing_names_come_from_the_config(load_wasmtime: Loader) -> None:
    sandbox = load_wasmtime("redis-firewall",
                            config={"allow": "get, SCAN", "close-on": "set"}).new_sandbox()
    assert send(sandbox, encode_command("GET", "k"), encode_command("scan", "0")) == [FORWARD] * 2
    reply(sandbox, b"$-1\r\n*2\r\n$1\r\n0\r\n*0\r\n")
    assert send(sandbox, encode_command("FLUSHALL")) == [Answer(refusal(b"FLUSHALL"))]
    assert send(sandbox, encode_command("set", "k", "v")) == [AnswerAndClose(refusal(b"SET"))]
