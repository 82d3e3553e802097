"""The verdict rules on their own: Envoy's header validation at its edges, the header map Envoy
would be left with, where the `route` grant applies, and how a manifest sets the limits."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from sidecar.plugin.world import plugin_world
from tests.unit.test_canonical import FlatMemory
from vmm.capabilities.route import RouteGrant
from vmm.errors import ManifestError
from vmm.events import (
    Direction,
    Event,
    HttpBody,
    HttpForward,
    HttpHeaders,
    HttpOpen,
    HttpTrailers,
    Mutation,
    Replace,
    Respond,
    StreamInfo,
    TcpData,
    Verdict,
)
from vmm.manifest import Limits, load_manifest
from vmm.verdicts import (
    MAX_HEADERS,
    TooLarge,
    Unacceptable,
    Ungranted,
    VerdictProblem,
    VerdictRules,
    check_verdict,
)
from vmm.world import EXPORTS, HTTP_VERDICT, http_verdict

RULES = VerdictRules(max_bytes=1 << 20)
ROUTED = VerdictRules(max_bytes=1 << 20, settable=RouteGrant().settable)
REQUEST = HttpHeaders(Direction.INBOUND, ((":path", b"/"), ("accept", b"*/*")), False)


def setting(*headers: tuple[str, bytes]) -> HttpForward:
    return HttpForward(Mutation(tuple(headers)))


@pytest.mark.parametrize("value", [b"", b"\tplain text ~", bytes(range(0x80, 0x100)),
                                   "ünïcode".encode()])
def test_values_envoy_takes(value: bytes) -> None:
    verdict = setting(("x-v", value))
    assert check_verdict(REQUEST, verdict, RULES) is verdict


@pytest.mark.parametrize("value", [b"\x00", b"a\rb", b"\n", b"\x08", b"\x1f", b"\x7f"])
def test_values_envoy_refuses(value: bytes) -> None:
    with pytest.raises(Unacceptable, match="no control characters but HTAB"):
        check_verdict(REQUEST, setting(("x-v", value)), RULES)


@pytest.mark.parametrize("name", ["", "x v", "x:v", "X-Up", "x\u00e9", "(x)", "::path"])
def test_names_envoy_refuses(name: str) -> None:
    with pytest.raises(Unacceptable, match="is not a lower-case header name"):
        check_verdict(REQUEST, setting((name, b"1")), RULES)


def test_the_header_map_left_is_counted_as_envoy_counts_it() -> None:
    """Setting a name already there replaces it; removing frees room for another."""
    full = HttpHeaders(Direction.OUTBOUND, tuple((f"x-{i}", b"v") for i in range(MAX_HEADERS)),
                       False)
    assert check_verdict(full, setting(("x-0", b"new")), RULES)
    swap = HttpForward(Mutation((("x-new", b"1"),), ("x-1",)))
    assert check_verdict(full, swap, RULES) is swap
    with pytest.raises(TooLarge, match="it leaves 101 headers"):
        check_verdict(full, setting(("x-new", b"1")), RULES)
    almost = setting(("x-0", b"v" * ((60 << 10) - 100)))  # within 60 KiB alone, not with the rest
    with pytest.raises(TooLarge, match=r"the headers it leaves come to 60\.4 KiB"):
        check_verdict(full, almost, RULES)


def test_where_envoy_cannot_see_the_map_what_is_set_is_counted() -> None:
    big = setting(("x-big", b"v" * (61 << 10)))
    for event in (HttpOpen(StreamInfo()), HttpBody(Direction.INBOUND, b"", True)):
        with pytest.raises(TooLarge, match=r"the headers it sets come to 61\.0 KiB"):
            check_verdict(event, big, RULES)


def test_the_route_grant_is_for_request_headers() -> None:
    rewrite = setting((":path", b"/new"))
    with pytest.raises(Ungranted):
        check_verdict(REQUEST, rewrite, RULES)
    assert check_verdict(REQUEST, rewrite, ROUTED) is rewrite
    assert check_verdict(HttpOpen(StreamInfo()), rewrite, ROUTED) is rewrite
    trailers = HttpTrailers(Direction.INBOUND, ())
    with pytest.raises(Unacceptable, match="set-trailers: :path cannot be set here"):
        check_verdict(trailers, rewrite, ROUTED)
    with pytest.raises(Unacceptable, match="does not start with '/'"):
        check_verdict(REQUEST, setting((":path", b"new")), ROUTED)
    with pytest.raises(Unacceptable, match="is not an authority"):
        check_verdict(REQUEST, setting(("host", b"a b")), ROUTED)


@pytest.mark.parametrize(("verdict", "problem", "message"), [
    (Respond(101), Unacceptable, "status 101 is not between 200 and 599"),
    (Respond(204, (), b"x"), Unacceptable, "a 204 response carries no body"),
    (Respond(200, ((":status", b"201"),)), Unacceptable, ":status cannot be set here"),
    (Respond(200, (("transfer-encoding", b"chunked"),)), Unacceptable, "frames the message"),
    (Respond(200, (("x", b""),) * 101), TooLarge, "respond headers has 101 entries"),
    (Respond(200, (), b"x" * ((1 << 20) + 1)), TooLarge, "declares 1.0 MiB"),
    (HttpForward(Mutation(remove_headers=("content-length",))), None, ""),
])
def test_responses(verdict: Verdict, problem: type[VerdictProblem] | None, message: str) -> None:
    if problem is None:
        assert check_verdict(REQUEST, verdict, RULES) is verdict
    else:
        with pytest.raises(problem, match=message):
            check_verdict(REQUEST, verdict, RULES)


@pytest.mark.parametrize(("event", "verdict"), [
    (TcpData(Direction.INBOUND, b"", False), Replace(b"x" * ((1 << 20) + 1))),
    (HttpBody(Direction.INBOUND, b"", True),
     HttpForward(Mutation((("x", b"1"),) * 50, body=b"x" * ((1 << 20) - 50 * 100)))),
])
def test_every_list_entry_costs_besides_its_bytes(event: Event, verdict: Verdict) -> None:
    with pytest.raises(TooLarge, match="a verdict may hold"):
        check_verdict(event, verdict, RULES)


def manifest(tmp_path: Path, limits: str) -> Path:
    (tmp_path / "manifest.toml").write_text(
        f'name = "p"\nversion = "0"\nevents = ["tcp"]\n[limits]\n{limits}\n'
        "[grants.route]\nmethod = true\n")
    return tmp_path


def test_the_verdict_limit_defaults_to_memory_and_may_be_lower(tmp_path: Path) -> None:
    assert load_manifest(manifest(tmp_path, "memory-mb = 4")).limits.verdict_bytes == 4 << 20
    loaded = load_manifest(manifest(tmp_path, "memory-mb = 4\nverdict-kb = 64"))
    assert loaded.limits.verdict_bytes == 64 << 10
    assert VerdictRules.of(loaded).settable == {":path", ":authority", "host", ":method"}
    with pytest.raises(ManifestError, match="verdict-kb: 8192 KiB is more than memory-mb"):
        load_manifest(manifest(tmp_path, "memory-mb = 4\nverdict-kb = 8192"))


def test_tables_take_a_quarter_of_memory_and_of_what_the_cpu_bound_fills() -> None:
    assert Limits(16 << 20, 20).table_elements == 512 << 10  # memory decides
    assert Limits(1 << 30, 20).table_elements == 1_000_000  # CPU decides


def test_a_python_plugins_world_imports_no_interface_for_route(tmp_path: Path) -> None:
    """`route` widens verdicts; the WIT has no such interface to import."""
    world = plugin_world(load_manifest(manifest(tmp_path, "memory-mb = 4")))
    assert "route" not in world and "include hyperfilter:plugin/filter@0.1.0" in world


@pytest.mark.parametrize("value", [
    (0, ([("x-user", b"alice"), ("x-empty", b"")], ["x-api-key", "x-drop"], b"new body")),
    (0, ([], ["x-api-key"], None)),
    (1, (401, [("content-type", b"text/plain"), ("www-authenticate", b"ApiKey")], b"no")),
])
def test_the_written_out_lifting_agrees_with_the_generic_one(value: tuple) -> None:
    memory = FlatMemory()
    HTTP_VERDICT.store(memory, 64, value)
    expected = http_verdict(*HTTP_VERDICT.load(memory, 64))
    assert EXPORTS[HttpHeaders].lift(memory, 64, len(memory.data)) == expected


def test_lifting_counts_each_entry_as_declared_before_reading_any() -> None:
    """Four records naming one 1 KiB value at the end of memory, four more naming bytes past
    it: refused for their declared size, not for the bytes that are not there."""
    memory = FlatMemory()
    records = [(0, 1, len(memory.data) - 1024, 1024)] * 4 + [(0, 1, 1 << 30, 1024)] * 4
    memory.write(512, b"".join(struct.pack("<IIII", *r) for r in records))
    memory.write(64, struct.pack("<B3xIIIIB3xII", 0, 512, len(records), 0, 0, 0, 0, 0))
    with pytest.raises(TooLarge, match=r"declares 8\.0 KiB in 8 list entries"):
        EXPORTS[HttpHeaders].lift(memory, 64, 4 << 10)
