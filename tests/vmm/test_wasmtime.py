"""What only the wasmtime tier does: components (Python, through componentize-py), and its
compile cache."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import Loader, plugin_dir
from vmm.errors import UngrantedImportError
from vmm.events import (
    FORWARD,
    Direction,
    HttpForward,
    HttpHeaders,
    Mutation,
    Replace,
    Respond,
    TcpData,
)
from vmm.wasmtime.engine import reservation_for

IN = Direction.INBOUND


def data(text: bytes) -> TcpData:
    return TcpData(IN, text, False)


def test_a_python_component(load_wasmtime: Loader) -> None:
    sandbox = load_wasmtime("http-auth").new_sandbox()
    assert sandbox.deliver(HttpHeaders(IN, ((":path", b"/"), ("x-api-key", b"k-bob-456")),
                                       True)) == HttpForward(Mutation(
        (("x-auth-user", b"bob"),), ("x-api-key",)))
    refused = sandbox.deliver(HttpHeaders(IN, ((":path", b"/"),), True))
    assert isinstance(refused, Respond) and refused.status == 401


def test_a_python_component_keeps_state_per_sandbox_only(load_wasmtime: Loader) -> None:
    plugin = load_wasmtime("tcp-redactor")
    first, second = plugin.new_sandbox(), plugin.new_sandbox()
    assert first.deliver(data(b"pw hun")) == Replace(b"pw ")  # "hun" held back
    assert second.deliver(data(b"ter2")) == FORWARD  # nothing held in a fresh sandbox
    assert first.deliver(data(b"ter2!")) == Replace(b"*******!")


def test_large_bodies_cross_into_components_intact(load_wasmtime: Loader) -> None:
    """A Python component's event and verdict, 256 KiB each way, through the host's canonical
    ABI: every byte must arrive, and come back, where it belongs."""
    sandbox = load_wasmtime("tcp-redactor").new_sandbox()
    body = bytes(range(256)) * 1024 + b"hunter2"
    assert sandbox.deliver(TcpData(IN, body, True)) == Replace(body[:-7] + b"*******")


def test_settling_a_component_after_close_is_harmless(load_wasmtime: Loader) -> None:
    sandbox = load_wasmtime("tcp-redactor").new_sandbox()
    assert sandbox.deliver(data(b"hunter")) == Replace(b"")
    sandbox.close()
    sandbox.settle()
    assert sandbox.fault is None


def test_an_ungranted_import_of_a_component_is_refused(tmp_path: Path,
                                                       load_wasmtime: Loader) -> None:
    """A component that imports the log interface, with that grant taken away."""
    component = tmp_path / "http-auth"
    shutil.copytree(plugin_dir("http-auth"), component)
    manifest = component / "manifest.toml"
    manifest.write_text(manifest.read_text().replace("[grants.log]\nrate = 5\n", ""))
    with pytest.raises(UngrantedImportError, match=re.escape("hyperfilter:plugin/log@0.1.0")):
        load_wasmtime(component)


def address_space() -> int:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmSize:\s+(\d+) kB", status).group(1)) << 10  # type: ignore[union-attr]


def test_live_sandboxes_reserve_address_space_in_proportion_to_their_memory_limit(
        load_wasmtime: Loader) -> None:
    """wasmtime's default reservation (4 GiB and guards per memory) ran out of address space
    at about 20,000 live sandboxes."""
    plugin = load_wasmtime("pass-through")
    reservation = reservation_for(plugin.manifest.limits.memory_bytes)
    assert reservation < 1 << 30
    before = address_space()
    sandboxes = [plugin.new_sandbox() for _ in range(200)]
    per_sandbox = (address_space() - before) / len(sandboxes)
    for sandbox in sandboxes:
        sandbox.close()
    assert reservation / 2 < per_sandbox < 2 * reservation  # other mappings come and go
