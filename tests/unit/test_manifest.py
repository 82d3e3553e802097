"""Manifests: what a valid one means, and errors that name the problem for a broken one."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmm.capabilities import interface_id
from vmm.capabilities.metrics import MetricsGrant
from vmm.capabilities.shared_state import SharedStateGrant
from vmm.errors import ManifestError, UngrantedImportError, WorldMismatchError
from vmm.events import EventKind
from vmm.grants import grant_for
from vmm.manifest import FailurePolicy, Limits, load_manifest

VALID = '''
name = "rate-limiter"
version = "1.2.0"
events = ["http.request-headers", "tcp"]
failure-policy = "fail-open"
wasm = "build/limiter.wasm"

[limits]
memory-mb = 8
cpu-ms = 5

[grants.shared-state]
max-keys = 100
[grants.metrics]
counters = ["limited"]
[grants.clock]

[config]
limit = 100
burst = true
zone = "eu"
'''


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "manifest.toml").write_text(text)
    return tmp_path


def test_a_valid_manifest(tmp_path: Path) -> None:
    m = load_manifest(write(tmp_path, VALID))
    assert (m.name, m.version, m.failure_policy) == ("rate-limiter", "1.2.0",
                                                     FailurePolicy.FAIL_OPEN)
    assert m.wasm == tmp_path / "build" / "limiter.wasm"
    assert m.events == {EventKind.HTTP_REQUEST_HEADERS, EventKind.TCP_OPEN, EventKind.TCP_DATA,
                        EventKind.TCP_CLOSE}
    assert m.limits == Limits(memory_bytes=8 << 20, cpu_ms=5)
    assert m.grants["shared-state"] == SharedStateGrant(max_keys=100, max_bytes=64 * 1024)
    assert m.grants["metrics"] == MetricsGrant(counters=("limited",))
    assert set(m.grants) == {"shared-state", "metrics", "clock"}
    assert m.config == {"limit": "100", "burst": "true", "zone": "eu"}
    assert m.wants(EventKind.TCP_DATA) and not m.wants(EventKind.HTTP_RESPONSE_BODY)


def test_defaults(tmp_path: Path) -> None:
    m = load_manifest(write(tmp_path, 'name = "p"\nversion = "0"\nevents = ["tcp.data"]\n'))
    assert m.wasm == tmp_path / "p.wasm"
    assert m.failure_policy is None and m.limits == Limits() and not m.grants and not m.config


@pytest.mark.parametrize(("change", "message"), [
    ('[grants.filesystem]\n', "grants.filesystem: unknown grant 'filesystem'"),
    ('[grants.log]\nrate = "fast"\n', "grants.log.rate: expected int, found str"),
    ('[grants.log]\nburst = 3\n', "grants.log.burst: unknown field"),
    ('[grants.metrics]\ncounters = ["Bad-Name"]\n', "'Bad-Name' is not a metric name"),
    ('[limits]\nmemory-mb = 0\n', "limits.memory-mb: must be a positive integer"),
    ('[limits]\ncpu-ms = true\n', "limits.cpu-ms: expected int, found bool"),
    ('colour = "red"\n', "colour: unknown field"),
    ('[config]\nnested = { a = 1 }\n', "config.nested: config values are strings"),
])
def test_errors_name_the_field(tmp_path: Path, change: str, message: str) -> None:
    base = 'name = "p"\nversion = "0"\nevents = ["tcp.data"]\n'
    with pytest.raises(ManifestError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_manifest(write(tmp_path, base + change))


@pytest.mark.parametrize(("text", "message"), [
    ('version = "0"\nevents = ["tcp"]\n', "name: required field is missing"),
    ('name = "Big Name"\nversion = "0"\nevents = ["tcp"]\n', "must be lower-case"),
    ('name = "p"\nversion = "0"\nevents = "tcp"\n', "events: expected list, found str"),
    ('name = "p"\nversion = "0"\nevents = ["udp.data"]\n', "unknown event 'udp.data'"),
    ('name = "p"\nversion = "0"\nevents = []\n', "at least one event"),
    ('name = "p"\nversion = "0"\nevents = ["tcp"]\nfailure-policy = "maybe"\n',
     "'maybe' is not one of: fail-closed, fail-open"),
    ('name = "p\nversion = 1', "is not valid TOML"),
    # What breaks tomllib other than with its own error, and a choice given as a list:
    ('name = "p"\nversion = "0"\nevents = ["tcp"]\nx = ' + "[" * 5000 + "]" * 5000,
     "nested too deeply"),
    ('name = "p"\nversion = "0"\nevents = ["tcp"]\nx = ' + "9" * 5000, "is not valid TOML"),
    ('name = "p"\nversion = "0"\nevents = ["tcp"]\nfailure-policy = ["fail-open"]\n',
     "is not one of: fail-closed, fail-open"),
])
def test_malformed_manifests(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        load_manifest(write(tmp_path, text))


def test_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no manifest at"):
        load_manifest(tmp_path)


def test_one_place_grants_or_refuses_an_interface(tmp_path: Path) -> None:
    m = load_manifest(write(tmp_path, VALID))
    assert grant_for(m, interface_id("clock"), "now") is m.grants["clock"]
    with pytest.raises(UngrantedImportError, match="does not grant it"):
        grant_for(m, interface_id("log"))
    with pytest.raises(WorldMismatchError, match="not a hyperfilter capability"):
        grant_for(m, "wasi:sockets/tcp@0.2.0", "connect")
