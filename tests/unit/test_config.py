"""The sidecar's configuration file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sidecar.config import (
    ConfigError,
    TcpAddress,
    TlsConfig,
    UnixAddress,
    load_config,
    parse_address,
)
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
    # no tier named: kvm, and wasmtime where kvm cannot run it
    blocker = config.plugins["blocker"]
    assert (blocker.tier, blocker.fallback_tier) == ("kvm", "wasmtime")
    assert auth.config == {"keys": "a:b", "strict": "true"}
    assert config.chains == {"guard": ("blocker", "auth")}


@pytest.mark.parametrize(("text", "message"), [
    ('[chains]\nx = ["a"]\n', "plugins: required table is missing"),
    ('[plugins]\na = "a"\n[chains]\nx = ["a", "nope"]\n', "chains.x: unknown plugin 'nope'"),
    ('[plugins]\na = "a"\n[chains]\na = ["a"]\n', "chains.a: a plugin already has this name"),
    ('default-chain = "zz"\n[plugins]\na = "a"\n', "default-chain: unknown chain or plugin"),
    ('[plugins.a]\npath = "a"\ntier = "qemu"\n', "plugins.a.tier: 'qemu' is not one of"),
    ('[plugins.a]\npath = "a"\nweight = 3\n', "plugins.a.weight: unknown field"),
    ('[plugins.a]\npath = "a"\nfallback-tier = "kvm"\n', "fallback-tier: the same as tier"),
    ('lisen = "x"\n[plugins]\na = "a"\n', "lisen: unknown field"),
])
def test_errors_name_the_field(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no configuration file"):
        load_config(tmp_path / "absent.toml")


def test_listening_addresses(tmp_path: Path) -> None:
    def listen(value: str) -> str:
        return load_config(write(tmp_path, f'listen = "{value}"\n[plugins]\na = "a"\n')).listen

    assert listen("0.0.0.0:6000") == "0.0.0.0:6000"
    assert listen("[::1]:0") == "[::1]:0"
    assert listen(":50051") == ":50051"  # every interface
    assert listen("unix:/run/hf.sock") == "unix:/run/hf.sock"
    assert listen("unix:hf.sock") == f"unix:{tmp_path / 'hf.sock'}"  # beside the file
    assert parse_address("unix:/run/hf.sock") == UnixAddress(Path("/run/hf.sock"))
    assert parse_address("[::1]:7") == TcpAddress("::1", 7)
    assert str(TcpAddress("::1", 7)) == "[::1]:7"


def test_drain_seconds_pid_file_and_tls(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '''
drain-seconds = 2.5
pid-file = "run/hf.pid"
[tls]
cert = "tls/cert.pem"
key = "/etc/hf/key.pem"
client-ca = "tls/ca.pem"
[plugins]
a = "a"
'''))
    assert config.drain_seconds == 2.5
    assert config.pid_file == tmp_path / "run" / "hf.pid"
    assert config.tls == TlsConfig(tmp_path / "tls" / "cert.pem", Path("/etc/hf/key.pem"),
                                   tmp_path / "tls" / "ca.pem")
    defaults = load_config(write(tmp_path, '[plugins]\na = "a"\n'))
    assert (defaults.drain_seconds, defaults.pid_file, defaults.tls) == (30.0, None, None)
    assert load_config(write(tmp_path, 'drain-seconds = 0\n[plugins]\na = "a"\n')) \
        .drain_seconds == 0
    only_server = load_config(write(tmp_path, '[tls]\ncert = "c"\nkey = "k"\n[plugins]\na = "a"\n'))
    assert only_server.tls is not None and only_server.tls.client_ca is None


@pytest.mark.parametrize(("text", "message"), [
    ('listen = "localhost"\n', "listen: 'localhost': expected HOST:PORT or unix:PATH"),
    ('listen = "h:port"\n', "listen: 'h:port': expected HOST:PORT or unix:PATH"),
    ('listen = "h:70000"\n', "listen: 'h:70000': expected HOST:PORT or unix:PATH"),
    ('listen = "unix:"\n', "listen: 'unix:': expected unix:PATH"),
    ('listen = 50051\n', "listen: expected str, found int"),
    ('metrics = "unix:/m"\n', "metrics: 'unix:/m': expected HOST:PORT (Prometheus scrapes"),
    ('metrics = "9464"\n', "metrics: '9464': expected HOST:PORT or unix:PATH"),
    ('drain-seconds = -1\n', "drain-seconds: must not be negative, found -1"),
    ('drain-seconds = "30s"\n', "drain-seconds: expected a number of seconds, found str"),
    ('drain-seconds = true\n', "drain-seconds: expected a number of seconds, found bool"),
    ('pid-file = 1\n', "pid-file: expected str, found int"),
    ('[tls]\ncert = "c"\n', "tls.key: required field is missing"),
    ('[tls]\nkey = "k"\n', "tls.cert: required field is missing"),
    ('[tls]\ncert = "c"\nkey = "k"\nclient_ca = "x"\n', "tls.client_ca: unknown field"),
    ('tls = "on"\n', "tls: expected a table, found str"),
])
def test_operations_fields_name_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(write(tmp_path, text + '[plugins]\na = "a"\n'))
