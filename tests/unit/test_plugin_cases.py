"""The plugin test file (sidecar/plugin/expectations.py): what a good file becomes, and bad
files refused with the file, the line or case, and the problem named; how expectations
compare with verdicts."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar.plugin.expectations import (
    CaseFileError,
    Exactly,
    Fault,
    ForwardWith,
    RespondWith,
    ScriptedCase,
    describe,
    load_cases,
    matches,
    parse_cases,
)
from vmm.events import (
    CLOSE,
    FORWARD,
    HTTP_FORWARD,
    AnswerAndClose,
    Direction,
    HttpBody,
    HttpForward,
    HttpHeaders,
    HttpTrailers,
    Mutation,
    Replace,
    Respond,
    StreamInfo,
    TcpData,
)

FILE = Path("plugin/tests.toml")

GOOD = '''
config = { limit = 3, strict = true }

[[case]]
name = "FLUSHALL is refused"
protocol = "tcp"
repeat = 2
source-address = "10.1.2.3:40000"
destination-address = "10.0.0.1:6379"
server-name = "redis.example"
metadata = { tenant = "a" }
expect-open = "forward"

[[case.event]]
inbound = "*1\\r\\n$8\\r\\nFLUSH"
expect = "forward"

[[case.event]]
outbound = { hex = "2b4f4b0d0a" }
expect = { replace = "+OK\\r\\n" }

[[case.event]]
inbound = "ALL\\r\\n"
end-of-stream = true
expect = { answer-and-close = "-ERR FLUSHALL is not allowed\\r\\n" }

[[case]]
name = "http"
protocol = "http"

[[case.event]]
headers = [[":method", "GET"], ["authorization", "Bearer abc"]]
expect = { forward = { set-headers = [["x-user", "alice"]], remove-headers = ["authorization"] } }

[[case.event]]
direction = "outbound"
body = "card 4111"
end-of-stream = true
expect = { forward = { body = "card ****" } }

[[case]]
name = "trailers, then an answer"
protocol = "http"

[[case.event]]
trailers = [["x-sum", "1"]]
expect = { respond = 401, body = "no\\n", headers = [["www-authenticate", "Bearer"]] }
'''


def parse(text: str) -> list[ScriptedCase]:
    return list(parse_cases(text, FILE).cases)


def refused(text: str) -> str:
    with pytest.raises(CaseFileError) as raised:
        parse_cases(text, FILE)
    return str(raised.value)


def tcp_case(events: str, extra: str = "") -> str:
    return f'[[case]]\nname = "c"\nprotocol = "tcp"\n{extra}\n{events}'


def test_a_good_file_becomes_events_and_expectations() -> None:
    tests = parse_cases(GOOD, FILE)
    assert tests.config == {"limit": "3", "strict": "true"}
    tcp, http, trailers = tests.cases
    assert (tcp.number, tcp.name, tcp.protocol, tcp.repeat, tcp.line) == (
        1, "FLUSHALL is refused", "tcp", 2, 4)
    assert tcp.info == StreamInfo("10.1.2.3:40000", "10.0.0.1:6379", "redis.example",
                                  (("tenant", "a"),))
    assert tcp.events == (TcpData(Direction.INBOUND, b"*1\r\n$8\r\nFLUSH", False),
                          TcpData(Direction.OUTBOUND, b"+OK\r\n", False),
                          TcpData(Direction.INBOUND, b"ALL\r\n", True))
    assert tcp.expect_open == Exactly(FORWARD)
    assert tcp.expects == (Exactly(FORWARD), Exactly(Replace(b"+OK\r\n")),
                           Exactly(AnswerAndClose(b"-ERR FLUSHALL is not allowed\r\n")))
    assert http.events == (
        HttpHeaders(Direction.INBOUND, ((":method", b"GET"), ("authorization", b"Bearer abc")),
                    False),
        HttpBody(Direction.OUTBOUND, b"card 4111", True))
    assert http.expects == (ForwardWith(set_headers=(("x-user", b"alice"),),
                                        remove_headers=("authorization",)),
                            ForwardWith(body=b"card ****"))
    assert trailers.events == (HttpTrailers(Direction.INBOUND, (("x-sum", b"1"),)),)
    assert trailers.expects == (RespondWith(401, (("www-authenticate", b"Bearer"),), b"no\n"),)


def test_the_events_of_a_stream_ended_at_on_open_carry_no_expectation() -> None:
    [case] = parse(tcp_case('[[case.event]]\ninbound = "hi"\n', 'expect-open = "reset"'))
    assert case.expects == (None,)
    assert "leave its expect out" in refused(
        tcp_case('[[case.event]]\ninbound = "hi"\nexpect = "forward"\n',
                 'expect-open = "close"'))


@pytest.mark.parametrize(("text", "problem"), [
    ("[[case]\n", "plugin/tests.toml: not valid TOML: "),
    ("x = " + "[" * 5000 + "]" * 5000, "not valid TOML: nested too deeply"),
    ("x = " + "9" * 5000, "not valid TOML: "),
    ('[[case]]\nname = "c"\nprotocol = ["tcp"]\n', "case 1 (c): protocol: ['tcp'] is not one of"),
    ("", "no [[case]]"),
    ("[other]\n", "other: unknown field"),
    ('[[case]]\nname = "c"\nprotocol = "udp"\n', "case 1 (c): protocol: 'udp' is not one of"),
    ('[[case]]\nname = "c"\nprotocol = "tcp"\n', "case 1 (c): no [[case.event]]"),
    ('[[case]]\nprotocol = "tcp"\n', "case 1: name: required field is missing"),
    (tcp_case('[[case.event]]\ninbound = "x"\nexpect = "forward"\n', "repeat = 0"),
     "repeat: must be a positive integer"),
    (tcp_case('[[case.event]]\ninbound = "x"\nexpect = "forward"\n', "colour = 1"),
     "colour: unknown field"),
    (tcp_case('[[case.event]]\ninbound = "x"\noutbound = "y"\nexpect = "forward"\n'),
     "event 1: an event has exactly one of inbound, outbound (found inbound, outbound)"),
    (tcp_case('[[case.event]]\ninbound = "x"\n'), "event 1: expect: required field"),
    (tcp_case('[[case.event]]\ninbound = { hex = "zz" }\nexpect = "forward"\n'),
     "inbound.hex: 'zz' is not hexadecimal bytes"),
    (tcp_case('[[case.event]]\ninbound = 7\nexpect = "forward"\n'),
     'inbound: expected a string or { hex = "..." }, found int'),
    (tcp_case('[[case.event]]\ninbound = "x"\nexpect = "drop"\n'),
     "expect: 'drop' is not a TCP verdict"),
    (tcp_case('[[case.event]]\ninbound = "x"\nexpect = { respond = 403 }\n'),
     "expect: expected \"forward\", \"close\""),
    (tcp_case('[[case.event]]\ninbound = "x"\nexpect = "close"\n'
              '[[case.event]]\ninbound = "y"\nexpect = "forward"\n'),
     "event 2: the stream ended at event 1 (close): Envoy sends nothing after it"),
    ('[[case]]\nname = "h"\nprotocol = "http"\n[[case.event]]\nheaders = [["Host", "a"]]\n'
     'expect = "forward"\n', "header name 'Host': names are lower-case"),
    ('[[case]]\nname = "h"\nprotocol = "http"\n[[case.event]]\nheaders = [["host"]]\n'
     'expect = "forward"\n', "headers[0]: expected a [name, value] pair"),
    ('[[case]]\nname = "h"\nprotocol = "http"\n[[case.event]]\nbody = "b"\n'
     'expect = "close"\n', "expect: expected \"forward\", \"fault\""),
    ('[[case]]\nname = "h"\nprotocol = "http"\n[[case.event]]\nbody = "b"\n'
     'expect = { respond = 42 }\n', "expect.respond: 42 is not an HTTP status"),
    ('[[case]]\nname = "h"\nprotocol = "http"\n[[case.event]]\nbody = "b"\n'
     'expect = { forward = { headers = [] } }\n', "forward.headers: unknown field"),
    ('[[case]]\nname = "h"\nprotocol = "http"\n[[case.event]]\ntrailers = []\n'
     'end-of-stream = true\nexpect = "forward"\n', "trailers always end their direction"),
    ('[[case]]\nname = "h"\nprotocol = "http"\n[[case.event]]\nbody = "b"\n'
     'direction = "up"\nexpect = "forward"\n', "direction: 'up' is not one of"),
])
def test_a_broken_file_is_refused_naming_the_problem(text: str, problem: str) -> None:
    message = refused(text)
    assert message.startswith(str(FILE))
    assert problem in message


def test_a_problem_names_the_line_of_its_case_or_event() -> None:
    text = (tcp_case('[[case.event]]\ninbound = "x"\nexpect = "forward"\n')
            + tcp_case('[[case.event]]\ninbound = "x"\nexpect = "forward"\n'
                       '\n[[case.event]]\ninbound = 1\nexpect = "forward"\n').replace(
                '"c"', '"d"'))
    assert refused(text).startswith(f"{FILE}:16: case 2 (d): event 2: inbound")
    twice = tcp_case('[[case.event]]\ninbound = "x"\nexpect = "forward"\n') * 2
    assert refused(twice).startswith(f"{FILE}:8: case 2 (c): the same name as case 1")


def test_a_missing_or_unreadable_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(CaseFileError, match=f"{tmp_path / 'tests.toml'}: no test file"):
        load_cases(tmp_path)
    (tmp_path / "tests.toml").write_bytes(b"\xff\xfe")
    with pytest.raises(CaseFileError, match="cannot be read"):
        load_cases(tmp_path)


def test_forward_with_checks_only_the_parts_it_lists() -> None:
    got = HttpForward(Mutation((("b", b"2"), ("a", b"1")), ("x",), b"new"))
    assert matches(ForwardWith(body=b"new"), got, faulted=False)
    assert matches(ForwardWith(set_headers=(("a", b"1"), ("b", b"2"))), got, faulted=False)
    assert not matches(ForwardWith(set_headers=(("a", b"1"),)), got, faulted=False)
    assert not matches(ForwardWith(remove_headers=()), got, faulted=False)
    assert not matches(ForwardWith(body=b"new"), HTTP_FORWARD, faulted=False)
    assert not matches(Exactly(HTTP_FORWARD), got, faulted=False)
    assert matches(Exactly(HTTP_FORWARD), HttpForward(Mutation()), faulted=False)


def test_respond_with_and_fault() -> None:
    answer = Respond(429, (("retry-after", b"1"), ("content-type", b"text/plain")), b"slow")
    assert matches(RespondWith(429), answer, faulted=False)
    assert matches(RespondWith(429, (("content-type", b"text/plain"), ("retry-after", b"1")),
                               b"slow"), answer, faulted=False)
    assert not matches(RespondWith(429, body=b"fast"), answer, faulted=False)
    assert not matches(RespondWith(403), answer, faulted=False)
    assert matches(Fault(), None, faulted=True)
    assert not matches(Fault(), FORWARD, faulted=False)
    assert not matches(Exactly(CLOSE), None, faulted=True)


def test_verdicts_are_described_in_the_files_words() -> None:
    assert describe(CLOSE) == "close"
    assert describe(AnswerAndClose(b'-ERR "no"\r\n\x00')) == \
        'answer-and-close "-ERR \\"no\\"\\r\\n\\x00"'
    assert describe(Replace(b"x" * 100)).endswith("… (100 bytes)")
    assert describe(Respond(401, (), b"")) == 'respond 401 body ""'
