"""TCP and HTTP sessions over small fake sandboxes: chain order, verdict composition, failure
policies. The real thing, with real plugins and Envoy, is in tests/integration."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sidecar.http_session import FAILURE_RESPONSE, HttpSession, apply_headers
from sidecar.registry import Chain, ChainLink, Pace
from sidecar.streams import StreamPlugins
from sidecar.tcp_session import ConnectionAction, TcpResult, TcpSession
from vmm.errors import PluginTrap
from vmm.events import (
    FORWARD,
    HTTP_FORWARD,
    Answer,
    AnswerAndClose,
    Close,
    Direction,
    Event,
    EventKind,
    HttpBody,
    HttpForward,
    HttpHeaders,
    HttpOpen,
    Mutation,
    Replace,
    Reset,
    Respond,
    StreamInfo,
    TcpClose,
    TcpData,
    TcpOpen,
    Verdict,
)
from vmm.manifest import FailurePolicy, Manifest
from vmm.pool import SandboxPool
from vmm.sandbox import LoadedPlugin, Sandbox

Script = Callable[[Event], Verdict | None]
IN, OUT = Direction.INBOUND, Direction.OUTBOUND


class FakeSandbox(Sandbox):
    def __init__(self, plugin: FakePlugin) -> None:
        super().__init__(plugin.name, plugin.verdict_rules)
        self._plugin = plugin
        self.closed = False
        self.pending = False  # a post-return waits
        self.settled = 0
        plugin.sandboxes.append(self)

    def _run(self, event: Event) -> Verdict | None:
        self._plugin.seen.append(event)
        self.pending = self._plugin.post_returns
        return self._plugin.script(event)

    @property
    def unsettled(self) -> bool:
        return self.pending

    def _settle(self) -> None:
        if self.pending:
            self.pending = False
            self.settled += 1

    def close(self) -> None:
        self.closed = True


class FakePlugin(LoadedPlugin):
    tier = "fake"
    kind = "fake"

    def __init__(self, name: str, script: Script, events: set[EventKind]) -> None:
        super().__init__(Manifest(name, "0", Path("x.wasm"), frozenset(events)))
        self.script = script
        self.seen: list[Event] = []
        self.sandboxes: list[FakeSandbox] = []
        self.post_returns = False

    def new_sandbox(self) -> FakeSandbox:
        return FakeSandbox(self)


TCP_EVENTS = {EventKind.TCP_OPEN, EventKind.TCP_DATA, EventKind.TCP_CLOSE}
HTTP_EVENTS = {k for k in EventKind if k.protocol == "http"}


def fake(name: str, script: Script, events: set[EventKind] = TCP_EVENTS) -> FakePlugin:
    return FakePlugin(name, script, events)


def tcp(*plugins: FakePlugin, policy: FailurePolicy = FailurePolicy.FAIL_CLOSED) -> TcpSession:
    chain = Chain("c", tuple(ChainLink(p, policy, SandboxPool(p, 0)) for p in plugins))
    return TcpSession(StreamPlugins(chain, "tcp"), StreamInfo())


def trap(event: Event) -> Verdict:
    raise PluginTrap("p", "unreachable")


def tag(label: bytes) -> Script:
    """Appends `label` to data, so the order plugins ran in shows in the result."""
    return lambda e: Replace(e.data + label) if isinstance(e, TcpData) else FORWARD


def test_inbound_runs_the_chain_in_order_and_outbound_in_reverse() -> None:
    session = tcp(fake("a", tag(b"A")), fake("b", tag(b"B")))
    assert session.data(IN, b">", False).data == b">AB"
    assert session.data(OUT, b"<", False).data == b"<BA"


def test_close_and_reset_stop_the_chain() -> None:
    later = fake("later", tag(b"!"))
    session = tcp(fake("closer", lambda e: Close() if isinstance(e, TcpData) else FORWARD), later)
    result = session.data(IN, b"x", False)
    assert result.action is ConnectionAction.CLOSE and result.data == b""
    assert not [e for e in later.seen if isinstance(e, TcpData)]
    reset = tcp(fake("r", lambda e: Reset() if isinstance(e, TcpData) else FORWARD))
    assert reset.data(IN, b"x", False).action is ConnectionAction.RESET


def test_nothing_passes_once_a_verdict_ended_the_connection() -> None:
    """What Envoy still sends after a close (a message in flight, a hostile peer) goes
    nowhere and gets the close again; the plugins see none of it."""
    refusing = fake("refuser", lambda e: AnswerAndClose(b"no") if isinstance(e, TcpOpen)
                    else FORWARD)
    session = tcp(refusing)
    assert session.data(IN, b"first", False).action is ConnectionAction.CLOSE
    for direction in (IN, OUT):
        assert session.data(direction, b"second", False) == TcpResult(
            b"", ConnectionAction.CLOSE)
    assert [e for e in refusing.seen if isinstance(e, TcpData)] == []
    resetting = tcp(fake("r", lambda e: Reset() if isinstance(e, TcpData) else FORWARD))
    resetting.data(OUT, b"x", False)
    assert resetting.data(IN, b"y", False) == TcpResult(b"", ConnectionAction.RESET)


def test_open_verdicts_prefix_upstream_data_or_refuse() -> None:
    prefix = fake("proxy-proto", lambda e: Replace(b"PROXY ") if isinstance(e, TcpOpen)
                  else FORWARD)
    session = tcp(prefix, fake("b", tag(b"|")))
    assert session.data(OUT, b"banner", False).data == b"banner|"  # no prefix that way
    assert session.data(IN, b"hi", False).data == b"PROXY hi|"
    assert session.data(IN, b"again", False).data == b"again|"
    refuse = tcp(fake("deny", lambda e: Reset() if isinstance(e, TcpOpen) else FORWARD))
    assert refuse.data(IN, b"hi", False).action is ConnectionAction.RESET


def test_answers_go_to_the_client_and_the_bytes_no_further() -> None:
    later = fake("later", tag(b"!"))
    answering = fake("refuser", lambda e: Answer(b"-ERR " + e.data)
                     if isinstance(e, TcpData) and e.data.startswith(b"BAD") else FORWARD)
    session = tcp(fake("first", tag(b"1")), answering, later)
    assert session.data(IN, b"BAD", False) == TcpResult(b"", to_client=b"-ERR BAD1")
    assert not [e for e in later.seen if isinstance(e, TcpData)]
    assert session.data(IN, b"ok", False) == TcpResult(b"ok1!")  # the connection goes on
    # outbound: the answer replaces the upstream's bytes, past the plugins nearer the client
    assert session.data(OUT, b"BAD", False) == TcpResult(b"", to_client=b"-ERR BAD!")
    bye = tcp(fake("bye", lambda e: AnswerAndClose(b"bye") if isinstance(e, TcpData)
                   else FORWARD))
    assert bye.data(IN, b"x", False) == TcpResult(b"", ConnectionAction.CLOSE, b"bye")


def test_open_answers_greet_the_client_before_anything_else() -> None:
    greeter = fake("greeter", lambda e: Answer(b"220 hi\r\n") if isinstance(e, TcpOpen)
                   else FORWARD)
    second = fake("second", lambda e: Answer(b"(2)") if isinstance(e, TcpOpen) else FORWARD)
    session = tcp(greeter, second)
    assert session.data(IN, b"EHLO", False) == TcpResult(b"EHLO", to_client=b"220 hi\r\n(2)")
    assert session.data(IN, b"MAIL", False) == TcpResult(b"MAIL")  # only once
    upstream_first = tcp(greeter)
    assert upstream_first.data(OUT, b"+OK", False) == TcpResult(b"+OK", to_client=b"220 hi\r\n")
    closing = tcp(greeter, fake("no", lambda e: AnswerAndClose(b"full\r\n")
                                if isinstance(e, TcpOpen) else FORWARD), later := fake(
                                    "later", tag(b"!")))
    assert closing.data(IN, b"x", False) == TcpResult(b"", ConnectionAction.CLOSE,
                                                       b"220 hi\r\nfull\r\n")
    assert not later.seen  # its on-open never ran: the connection was refused before


def test_fail_open_drops_the_plugin_and_the_data_flows() -> None:
    faulty, after = fake("faulty", trap), fake("after", tag(b"+"))
    session = tcp(faulty, after, policy=FailurePolicy.FAIL_OPEN)
    assert session.data(IN, b"x", False).data == b"x+"
    assert session.data(IN, b"y", False).data == b"y+"
    assert faulty.sandboxes[0].closed  # destroyed at the fault
    assert len([e for e in faulty.seen if isinstance(e, TcpData)]) == 0


def test_fail_closed_closes_the_connection() -> None:
    session = tcp(fake("faulty", trap))
    assert session.data(IN, b"x", False).action is ConnectionAction.CLOSE


def test_a_refused_chain_fails_under_its_policy() -> None:
    closed = TcpSession(StreamPlugins(Chain("nope", (), "unknown chain 'nope'"), "tcp"),
                        StreamInfo())
    assert closed.data(IN, b"x", False).action is ConnectionAction.CLOSE
    opened = TcpSession(StreamPlugins(Chain("nope", (), "unknown", FailurePolicy.FAIL_OPEN),
                                      "tcp"), StreamInfo())
    assert opened.data(IN, b"x", False).data == b"x"


def test_close_tells_plugins_then_destroys_every_sandbox() -> None:
    plugin = fake("p", lambda e: FORWARD)
    session = tcp(plugin, fake("q", lambda e: FORWARD))
    session.data(IN, b"x", True)
    session.close()
    assert isinstance(plugin.seen[-1], TcpClose)
    assert all(s.closed for s in plugin.sandboxes)


def test_plugins_only_see_the_events_they_want_and_their_protocol() -> None:
    data_only = fake("d", lambda e: FORWARD, {EventKind.TCP_DATA})
    http_only = fake("h", lambda e: HTTP_FORWARD, HTTP_EVENTS)
    session = tcp(data_only, http_only)
    session.data(IN, b"x", False)
    session.close()
    assert [type(e) for e in data_only.seen] == [TcpData]
    assert http_only.sandboxes == []  # an HTTP plugin gets no sandbox on a TCP stream


def http(*plugins: FakePlugin, policy: FailurePolicy = FailurePolicy.FAIL_CLOSED) -> HttpSession:
    chain = Chain("c", tuple(ChainLink(p, policy, SandboxPool(p, 0)) for p in plugins))
    return HttpSession(StreamPlugins(chain, "http"), StreamInfo("1.2.3.4:5", "5.6.7.8:80"))


def headers_script(mutation: Mutation) -> Script:
    return lambda e: HttpForward(mutation) if isinstance(e, HttpHeaders) else HTTP_FORWARD


def test_http_mutations_compose_along_the_chain() -> None:
    first = fake("first", headers_script(Mutation((("x-a", b"1"), ("x-b", b"2")), ("cookie",))),
                 HTTP_EVENTS)
    second = fake("second", headers_script(Mutation((("x-a", b"3"),), ("x-b",))), HTTP_EVENTS)
    session = http(first, second)
    result = session.handle(HttpHeaders(IN, ((":path", b"/"), ("cookie", b"c")), True))
    assert result.respond is None
    assert result.mutation == Mutation((("x-a", b"3"),), ("cookie", "x-b"))
    second_saw = next(e for e in second.seen if isinstance(e, HttpHeaders))
    assert second_saw.headers == ((":path", b"/"), ("x-a", b"1"), ("x-b", b"2"))


def test_a_response_ends_the_chain() -> None:
    after = fake("after", lambda e: HTTP_FORWARD, HTTP_EVENTS)
    session = http(fake("auth", lambda e: Respond(401) if isinstance(e, HttpHeaders)
                        else HTTP_FORWARD, HTTP_EVENTS), after)
    result = session.handle(HttpHeaders(IN, (), True))
    assert result.respond == Respond(401) and result.details == "hyperfilter_auth"
    assert not [e for e in after.seen if isinstance(e, HttpHeaders)]


def test_open_gets_the_addresses_and_its_mutation_applies_to_request_headers() -> None:
    opener = fake("opener", lambda e: HttpForward(Mutation((("x-client", b"1.2.3.4"),)))
                  if isinstance(e, HttpOpen) else HTTP_FORWARD, HTTP_EVENTS)
    session = http(opener)
    opened = session.handle(HttpHeaders(IN, (), True))
    assert opened.mutation.set_headers == (("x-client", b"1.2.3.4"),)
    assert opener.seen[0] == HttpOpen(StreamInfo("1.2.3.4:5", "5.6.7.8:80"))
    assert session.handle(HttpHeaders(OUT, (), True)).mutation == Mutation()


def test_http_failure_policies() -> None:
    failed = http(fake("f", trap, HTTP_EVENTS)).handle(HttpHeaders(IN, (), True))
    assert failed.respond == FAILURE_RESPONSE
    passes = http(fake("f", trap, HTTP_EVENTS), policy=FailurePolicy.FAIL_OPEN)
    assert passes.handle(HttpHeaders(IN, (), True)).respond is None


def test_apply_headers_replaces_and_removes() -> None:
    fields = (("a", b"1"), ("b", b"2"), ("a", b"3"))
    assert apply_headers(fields, Mutation((("a", b"9"),), ("b",))) == (("a", b"9"),)


def test_streams_take_pooled_sandboxes_and_refill_the_pool() -> None:
    plugin = fake("p", lambda e: FORWARD)
    pool = SandboxPool(plugin, 2)
    pool.refill()
    assert len(plugin.sandboxes) == 2
    deferred: list = []
    chain = Chain("c", (ChainLink(plugin, FailurePolicy.FAIL_CLOSED, pool),))
    first = StreamPlugins(chain, "tcp", when_quiet=deferred.append)
    second = StreamPlugins(chain, "tcp", when_quiet=deferred.append)
    assert {first.links[0].sandbox, second.links[0].sandbox} == set(plugin.sandboxes)
    for work in deferred:
        work()
    assert len(plugin.sandboxes) == 4  # two more made, none handed out twice
    assert len({id(s) for s in plugin.sandboxes}) == 4


@pytest.mark.parametrize("post_returns", [True, False])
def test_a_post_return_is_deferred_only_when_there_is_one(post_returns: bool) -> None:
    plugin = fake("p", lambda e: FORWARD)
    plugin.post_returns = post_returns
    deferred: list = []
    chain = Chain("c", (ChainLink(plugin, FailurePolicy.FAIL_CLOSED, SandboxPool(plugin, 0)),))
    stream = StreamPlugins(chain, "tcp", defer=deferred.append)
    stream.deliver(stream.links[0], TcpData(IN, b"x", False))
    assert len(deferred) == (1 if post_returns else 0)
    for work in deferred:
        work()
    assert plugin.sandboxes[0].settled == (1 if post_returns else 0)


def spending(seconds: float) -> Script:
    """A plugin that burns `seconds` of its thread's CPU time on every event."""
    def script(event: Event) -> Verdict:
        end = time.thread_time() + seconds
        while time.thread_time() < end:
            pass
        return HTTP_FORWARD if isinstance(event, HttpBody) else FORWARD
    return script


@pytest.mark.parametrize("protocol", ["tcp", "http"])
@pytest.mark.parametrize(("size", "slow"), [(100, True), (1 << 20, False)])
def test_a_plugin_is_slow_for_the_cpu_its_events_take_beyond_their_bytes(
        protocol: str, size: int, slow: bool) -> None:
    """3 ms an event: slow on 100 bytes; on 1 MiB (3 ns a byte, within what carrying the
    bytes costs the sidecar) not, so a large message does not send its stream to the slow
    lanes, where it waited past Envoy's message timeout."""
    seconds = 1.5 * Pace.SLOW_EVENT_SECONDS
    plugin = fake("p", spending(seconds), TCP_EVENTS if protocol == "tcp" else HTTP_EVENTS)
    chain = Chain("c", (ChainLink(plugin, FailurePolicy.FAIL_CLOSED, SandboxPool(plugin, 0)),))
    stream = StreamPlugins(chain, protocol)
    data = bytes(size)
    event: Event = TcpData(IN, data, False) if protocol == "tcp" else HttpBody(IN, data, False)
    for _ in range(40):
        stream.deliver(stream.links[0], event)
    assert stream.slow is slow, f"average {stream.links[0].pace.average * 1000:.2f} ms"
