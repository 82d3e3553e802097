"""New cases and mutated ones, aware of what streams look like.

TCP: the client speaks one of the protocols plugins filter (HTTP/1, RESP, a TLS ClientHello,
SMTP-like lines) or sends random bytes; the upstream answers in kind; each side's bytes are cut
into segments at random places, and a side may close early. HTTP: header sets with
duplicates, huge and non-UTF-8 values, pseudo-headers, empty names; bodies cut into pieces of
every size; trailers; an end of stream that never comes. Mutation works on a case's structure
(drop, duplicate, swap, split, join events) and on its bytes (flip, insert, delete, splice
in a dictionary word), so that what one case reached, a near neighbour explores further.
"""

from __future__ import annotations

import itertools
import random
import re
import struct
from dataclasses import replace

from sidecar.fuzz.cases import Case, CaseEvent
from vmm.events import Direction, Fields, HttpBody, HttpHeaders, HttpTrailers, TcpData

MAX_SEGMENT = 64 << 10
MAX_BODY = 256 << 10
# Words plugins tend to look for: commands, headers, markers. Spliced into bytes by mutation.
DICTIONARY = (b"GET ", b"POST ", b"HTTP/1.1\r\n", b"\r\n\r\n", b"Host: ",
              b"*1\r\n$8\r\nFLUSHALL\r\n", b"CONFIG", b"AUTH", b"\x16\x03\x01", b"EHLO ",
              b"MAIL FROM:", b"4111 1111 1111 1111", b"authorization", b"x-api-key", b"\x00",
              b"\xff\xfe", b"%00", b"../", b"\r\n")
HEADER_NAMES = ("host", "user-agent", "authorization", "x-api-key", "content-type", "cookie",
                "x-forwarded-for", ":path", ":method", ":authority", ":status", "",
                "content-length", "transfer-encoding", "x-" + "a" * 300)


MAX_WORDS = 4096
_WORD = re.compile(rb"[\x20-\x7e]{3,40}")  # printable runs: a plugin's string literals


def words_of(wasm: bytes) -> tuple[bytes, ...]:
    """The printable strings in a plugin's wasm (its data: the patterns, commands and header
    names it compares against), the shortest first, so that mutation can splice them in."""
    found = {match.group() for match in _WORD.finditer(wasm)}
    return tuple(sorted(found, key=lambda word: (len(word), word))[:MAX_WORDS])


class Generator:
    def __init__(self, rng: random.Random, words: tuple[bytes, ...] = ()) -> None:
        """`words`: more to splice in than DICTIONARY (the plugin's own strings)."""
        self.rng = rng
        self.words = DICTIONARY + words

    # --- new cases ------------------------------------------------------------------------

    def case(self, protocol: str) -> Case:
        return self.tcp_case() if protocol == "tcp" else self.http_case()

    def tcp_case(self) -> Case:
        speak = self.rng.choice((self._http1, self._resp, self._tls_hello, self._smtp,
                                 self._random_bytes))
        events: list[CaseEvent] = []
        for _ in range(self.rng.randint(1, 4)):  # exchanges
            events += self._segments(Direction.INBOUND, speak())
            if self.rng.random() < 0.8:
                events += self._segments(Direction.OUTBOUND, self._answer())
        if events and self.rng.random() < 0.5:  # a side closes
            events[-1] = _end_of_stream(events[-1], True)
        return Case("tcp", tuple(events))

    def http_case(self) -> Case:
        events: list[CaseEvent] = []
        for direction in (Direction.INBOUND, Direction.OUTBOUND):
            body = self._body() if self.rng.random() < 0.6 else b""
            trailers = self._fields(self.rng.randint(1, 3)) if self.rng.random() < 0.15 else ()
            ends_at_headers = not body and not trailers
            events.append(HttpHeaders(direction, self._headers(direction), ends_at_headers))
            pieces = self._cut(body) if body else []
            for index, piece in enumerate(pieces):
                last = index == len(pieces) - 1
                events.append(HttpBody(direction, piece, last and not trailers
                                       and self.rng.random() < 0.9))  # or never ends
            if trailers:
                events.append(HttpTrailers(direction, trailers))
        return Case("http", tuple(events))

    # --- mutation -------------------------------------------------------------------------

    def mutate(self, case: Case) -> Case:
        events = list(case.events)
        for _ in range(self.rng.randint(1, 4)):
            if not events:
                return self.case(case.protocol)
            choice = self.rng.random()
            at = self.rng.randrange(len(events))
            if choice < 0.45:
                events[at] = self._mutate_event(events[at])
            elif choice < 0.6 and len(events) > 1:
                del events[at]
            elif choice < 0.7:
                events.insert(at, events[at])
            elif choice < 0.8 and len(events) > 1:
                other = self.rng.randrange(len(events))
                events[at], events[other] = events[other], events[at]
            elif choice < 0.9:
                events[at:at + 1] = self._split(events[at])
            else:
                events[at] = _end_of_stream(events[at], not _ends(events[at]))
        return Case(case.protocol, tuple(events))

    def _mutate_event(self, event: CaseEvent) -> CaseEvent:
        match event:
            case TcpData():
                return replace(event, data=self._mutate_bytes(event.data))
            case HttpBody():
                return replace(event, body=self._mutate_bytes(event.body))
            case HttpHeaders():
                return replace(event, headers=self._mutate_fields(event.headers))
            case HttpTrailers():
                return replace(event, trailers=self._mutate_fields(event.trailers))

    def _mutate_bytes(self, data: bytes) -> bytes:
        out = bytearray(data)
        choice = self.rng.random()
        if choice < 0.3 and out:
            for _ in range(self.rng.randint(1, 4)):
                out[self.rng.randrange(len(out))] ^= 1 << self.rng.randrange(8)
        elif choice < 0.6:
            at = self.rng.randint(0, len(out))
            out[at:at] = self.rng.choice(self.words)
        elif choice < 0.8 and out:
            at = self.rng.randrange(len(out))
            del out[at:at + self.rng.randint(1, 16)]
        else:
            at = self.rng.randint(0, len(out))
            out[at:at] = self.rng.randbytes(self.rng.randint(1, 64))
        return bytes(out[:MAX_BODY])

    def _mutate_fields(self, fields: Fields) -> Fields:
        items = list(fields)
        choice = self.rng.random()
        if choice < 0.4 or not items:
            items.append(self._field())
        elif choice < 0.6:
            del items[self.rng.randrange(len(items))]
        elif choice < 0.8:
            at = self.rng.randrange(len(items))
            name, value = items[at]
            items[at] = (name, self._mutate_bytes(value))
        else:
            items.append(self.rng.choice(items))  # a duplicate
        return tuple(items)

    def _split(self, event: CaseEvent) -> list[CaseEvent]:
        match event:
            case TcpData() if len(event.data) > 1:
                at = self.rng.randrange(1, len(event.data))
                return [TcpData(event.direction, event.data[:at], False),
                        TcpData(event.direction, event.data[at:], event.end_of_stream)]
            case HttpBody() if len(event.body) > 1:
                at = self.rng.randrange(1, len(event.body))
                return [HttpBody(event.direction, event.body[:at], False),
                        HttpBody(event.direction, event.body[at:], event.end_of_stream)]
        return [event]

    # --- pieces ---------------------------------------------------------------------------

    def _segments(self, direction: Direction, data: bytes) -> list[CaseEvent]:
        return [TcpData(direction, piece, False) for piece in self._cut(data)]

    def _cut(self, data: bytes) -> list[bytes]:
        """`data` in 1 to 5 pieces, cut at random places (a piece may be empty)."""
        cuts = sorted(self.rng.randint(0, len(data)) for _ in range(self.rng.randint(0, 4)))
        bounds = [0, *cuts, len(data)]
        return [data[a:b] for a, b in itertools.pairwise(bounds)]

    def _http1(self) -> bytes:
        method = self.rng.choice((b"GET", b"POST", b"PUT", b"CONNECT", b"G\x00T"))
        path = self.rng.choice((b"/", b"/admin", b"/../etc/passwd", b"/search?q=" + b"a" * 2000))
        headers = b"".join(b"%s: %s\r\n" % (name.encode(), value)
                           for name, value in self._fields(self.rng.randint(0, 6)) if name)
        return method + b" " + path + b" HTTP/1.1\r\n" + headers + b"\r\n" + self._body()[:512]

    def _resp(self) -> bytes:
        words = [self.rng.choice((b"GET", b"SET", b"FLUSHALL", b"CONFIG", b"KEYS", b"flushall",
                                  b"DEL", b"EVAL"))]
        words += [self.rng.randbytes(self.rng.randint(0, 20))
                  for _ in range(self.rng.randint(0, 3))]
        if self.rng.random() < 0.2:  # an inline command
            return b" ".join(words) + b"\r\n"
        return b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in words)

    def _tls_hello(self) -> bytes:
        sni = self.rng.choice((b"example.com", b"", b"a" * 300, self.rng.randbytes(10)))
        extension = struct.pack(">HHHBH", 0, len(sni) + 5, len(sni) + 3, 0, len(sni)) + sni
        body = (b"\x03\x03" + self.rng.randbytes(32) + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00"
                + struct.pack(">H", len(extension)) + extension)
        handshake = b"\x01" + struct.pack(">I", len(body))[1:] + body
        return b"\x16\x03\x01" + struct.pack(">H", len(handshake)) + handshake

    def _smtp(self) -> bytes:
        lines = [b"EHLO client", b"MAIL FROM:<a@example.com>", b"RCPT TO:<b@example.com>",
                 b"DATA", b"Subject: hi", b"4111 1111 1111 1111", b".", b"QUIT"]
        return b"\r\n".join(self.rng.sample(lines, self.rng.randint(1, len(lines)))) + b"\r\n"

    def _random_bytes(self) -> bytes:
        return self.rng.randbytes(self._size(MAX_SEGMENT))

    def _answer(self) -> bytes:
        return self.rng.choice((b"+OK\r\n", b"-ERR\r\n", b"HTTP/1.1 200 OK\r\ncontent-length: 2"
                                b"\r\n\r\nok", b"250 OK\r\n", self.rng.randbytes(self._size(4096))))

    def _headers(self, direction: Direction) -> Fields:
        pseudo: Fields = ((":method", b"GET"), (":path", b"/"), (":authority", b"example.com"),
                          (":scheme", b"http")) if direction is Direction.INBOUND else (
                              (":status", b"200"),)
        if self.rng.random() < 0.1:
            pseudo = ()  # headers without pseudo-headers
        return pseudo + self._fields(self.rng.randint(0, 8))

    def _fields(self, count: int) -> Fields:
        return tuple(self._field() for _ in range(count))

    def _field(self) -> tuple[str, bytes]:
        name = self.rng.choice(HEADER_NAMES)
        value = self.rng.choice((b"", b"text/plain", b"Bearer k-123", b"k-123",
                                 b"\xff\xfe non-utf-8", b"a" * self._size(16 << 10),
                                 self.rng.randbytes(self.rng.randint(0, 40))))
        return name, value

    def _body(self) -> bytes:
        return self.rng.choice((b"hello", b'{"card": "4111 1111 1111 1111"}',
                                self.rng.randbytes(self._size(MAX_BODY))))

    def _size(self, most: int) -> int:
        return self.rng.choice((0, 1, self.rng.randint(2, 64), self.rng.randint(65, 4096),
                                self.rng.randint(1, most)))


def _ends(event: CaseEvent) -> bool:
    return not isinstance(event, HttpTrailers) and event.end_of_stream


def _end_of_stream(event: CaseEvent, ends: bool) -> CaseEvent:
    return event if isinstance(event, HttpTrailers) else replace(event, end_of_stream=ends)
