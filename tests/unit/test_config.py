"""The sidecar's configuration file."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar.config import ConfigError, load_config
from vmm.manifest import FailurePolicy


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sidecar.toml"
    path.write_text(text)
    return path


def test_a_valid_configuration(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '''
listen = "0.0.0.0:6000"
metrics = "127.0.0.1:0"
default-chain = "guard"
default-failure-policy = "fail-open"
cache-dir = "cache"

[plugins]
blocker = "plugins/blocker"

[plugins.auth]
path = "/opt/auth"
failure-policy = "fail-closed"
tier = "kvm"
fallback-tier = "wasmtime"
config = { keys = "a:b", strict = true }

[chains]
guard = ["blocker", "auth"]
'''))
    assert config.listen == "0.0.0.0:6000" and config.metrics == "127.0.0.1:0"
    assert config.default_chain == "guard"
    assert config.default_failure_policy is FailurePolicy.FAIL_OPEN
    assert config.cache_dir == tmp_path / "cache"
    assert config.plugins["blocker"].path == tmp_path / "plugins" / "blocker"
    auth = config.plugins["auth"]
    assert (auth.path, auth.tier, auth.fallback_tier, auth.failure_policy) == (
        Path("/opt/auth"), "kvm", "wasmtime", FailurePolicy.FAIL_CLOSED)
    assert config.plugins["blocker"].fallback_tier is None
    assert auth.config == {"keys": "a:b", "strict": "true"}
    assert config.chains == {"guard": ("blocker", "auth")}


@pytest.mark.parametrize(("text", "message"), [
    ('[chains]\nx = ["a"]\n', "plugins: required table is missing"),
    ('[plugins]\na = "a"\n[chains]\nx = ["a", "nope"]\n', "chains.x: unknown plugin 'nope'"),
    ('[plugins]\na = "a"\n[chains]\na = ["a"]\n', "chains.a: a plugin already has this name"),
    ('default-chain = "zz"\n[plugins]\na = "a"\n', "default-chain: unknown chain or plugin"),
    ('[plugins.a]\npath = "a"\ntier = "qemu"\n', "plugins.a.tier: 'qemu' is not one of"),
    ('[plugins.a]\npath = "a"\nweight = 3\n', "plugins.a.weight: unknown field"),
    ('[plugins.a]\npath = "a"\nfallback-tier = "wasmtime"\n', "fallback-tier: the same as tier"),
    ('lisen = "x"\n[plugins]\na = "a"\n', "lisen: unknown field"),
])
def test_errors_name_the_field(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no configuration file"):
        load_config(tmp_path / "absent.toml")
