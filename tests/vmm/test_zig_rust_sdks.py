"""The Zig and Rust SDKs held to the C SDK, on each tier: tests/plugins/abi-probe and caps,
written again with each SDK (abi-probe-zig, caps-rust, ...), must answer every event as the C
plugins do: every hook, every verdict case, every field type, every capability."""

from __future__ import annotations

import pytest

from tests.conftest import Loader, RecordingMetrics, skip_unless_rustc
from tests.vmm.test_sandboxes import PROBE_EVENTS
from vmm.errors import PluginTrap
from vmm.events import Direction, Replace, TcpData

LANGUAGES = ("zig", "rust")
# tests/plugins/caps's commands, in an order that uses each capability; `badmetric` last
CAPS_COMMANDS = [b"config colour", b"config missing\r\n", b"clock", b"random 0", b"count visits",
                 b"count visits", b"get colour", b"set colour red", b"get colour",
                 b"set a " + b"x" * 60, b"set nospace", b"del colour", b"get colour", b"metric",
                 b"log", b"unknown"]


def skip_unless_built(language: str) -> None:
    if language == "rust":
        skip_unless_rustc()


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_abi_probe_answers_as_the_c_one_does(load: Loader, language: str) -> None:
    skip_unless_built(language)
    ours, theirs = load(f"abi-probe-{language}").new_sandbox(), load("abi-probe").new_sandbox()
    for event in PROBE_EVENTS:
        assert ours.deliver(event) == theirs.deliver(event), event


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_capabilities_answer_as_the_c_plugins_do(load: Loader, metrics: RecordingMetrics,
                                                     language: str) -> None:
    skip_unless_built(language)
    name = f"caps-{language}"
    ours, theirs = load(name).new_sandbox(), load("caps").new_sandbox()
    for command in CAPS_COMMANDS:
        event = TcpData(Direction.INBOUND, command, False)
        assert ours.deliver(event) == theirs.deliver(event), command
    random = ours.deliver(TcpData(Direction.INBOUND, b"random 16", False))
    assert isinstance(random, Replace) and len(random.data) == 32
    assert metrics.counters[name, "hits"] == 1 and metrics.gauges[name, "level"] == -7
    with pytest.raises(PluginTrap, match="counter 'undeclared' is not declared"):
        ours.deliver(TcpData(Direction.INBOUND, b"badmetric", False))
