"""The operator's side, through the real Envoy: SIGTERM drains (open streams finish, new ones go
nowhere, exit 0 within drain-seconds), SIGHUP and `hyperfilter reload` swap plugins for new
streams only (and a reload that fails to load changes nothing), and every kind of listening
socket: TCP, Unix, TLS and mTLS (a client certificate from another CA refused)."""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from h2.errors import ErrorCodes
from hyperframe.frame import DataFrame, Frame, GoAwayFrame, HeadersFrame

from sidecar import http2
from sidecar.app import Sidecar
from sidecar.envoy import (
    Envoy,
    SidecarTls,
    TcpListener,
    Upstream,
    envoy_binary,
    render_bootstrap,
)
from sidecar.network_ext_proc import METHOD
from sidecar.upstreams import EchoServer
from tests.conformance.raw_client import Decision, RawClient
from tests.conftest import plugin_dir
from tests.integration.harness import LoopThread, Stack, StackSpec, tcp_exchange
from tests.integration.test_cli import HYPERFILTER, not_wasm, write_config

pytestmark = pytest.mark.integration
SETTLE = http2.DRAIN_NOTICE_SECONDS + 0.5  # past the notice: the last-stream GOAWAY went out


# --- a real `hyperfilter serve` process, for signals -----------------------------------------


class Served:
    """`hyperfilter serve` with its log in a file, and Envoy in front of it (one TCP listener,
    `p`, running chain `p` to an echo server)."""

    def __init__(self, config: Path, log_path: Path) -> None:
        self.log_path = log_path
        with log_path.open("w") as log:
            self.process = subprocess.Popen([HYPERFILTER, "serve", "--config", str(config)],
                                            stderr=log)
        self.loop = LoopThread()
        self.echo = EchoServer()
        self.envoy: Envoy | None = None

    def start(self, workers: int = 1) -> Served:
        if workers == 1:
            sidecars = [self.wait_for(r"listening on (127\.0\.0\.1:\d+): network").group(1)]
        else:
            self.wait_for(r"give Envoy's cluster every one")
            sidecars = re.findall(r"worker \d \(pid \d+\) listening on (\S+?)[,\n]", self.log())
        echo = Upstream("127.0.0.1", self.loop.run(self.echo.start))
        self.envoy = Envoy(render_bootstrap(sidecars, [TcpListener("p", "p", echo)])).start()
        self.port = self.envoy.listener_ports["p"]
        return self

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_for(self, pattern: str, count: int = 1, timeout: float = 60) -> re.Match[str]:
        """The `count`th match of `pattern` in the log, once it is there."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = list(re.finditer(pattern, self.log()))
            if len(found) >= count:
                return found[count - 1]
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} (x{count}) in:\n{self.log()}")

    def signal(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)

    def close(self) -> None:
        if self.envoy is not None:
            self.envoy.stop()
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.loop.run(self.echo.stop)
        self.loop.close()


Serve = Callable[..., Served]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Serve]:
    """Starts `hyperfilter serve` with plugin `p` (an example or test plugin) and `extra`
    configuration, closing it after the test."""
    opened: list[Served] = []

    def serve(plugin: str, extra: str = "", workers: int = 1) -> Served:
        if "listen =" not in extra:  # any free ports (worker i: another free one each)
            extra = f'listen = "127.0.0.1:0"\n{extra}'
        opened.append(Served(write_config(tmp_path, f'p = "{plugin_dir(plugin)}"',
                                          f"{extra}\nworkers = {workers}"),
                             tmp_path / "serve.log"))
        return opened[-1].start(workers)

    yield serve
    for one in opened:
        one.close()


def set_plugin(tmp_path: Path, plugin: str | Path) -> None:
    """Point plugin `p` of the configuration at another plugin (by name, or its directory)."""
    location = plugin if isinstance(plugin, Path) else plugin_dir(plugin)
    config = tmp_path / "sidecar.toml"
    config.write_text(re.sub(r'(?m)^p = ".*"$', f'p = "{location}"', config.read_text()))


class Held:
    """A TCP connection through Envoy kept open: one gRPC stream, one set of sandboxes."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)

    def exchange(self, data: bytes, expected: int) -> bytes:
        self.sock.sendall(data)
        reply = b""
        while len(reply) < expected and (chunk := self.sock.recv(1024)):
            reply += chunk
        return reply

    def ended(self, timeout: float) -> bool:
        """The other end closed (FIN or RST) within `timeout`."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1024) == b""
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()


def refused(port: int) -> bool:
    """A new connection through Envoy got no stream to the sidecar: Envoy, failing closed,
    ended it without passing a byte."""
    exchange = tcp_exchange(port, [b"new"])
    return exchange.replies == [] and (exchange.closed or exchange.reset)


# --- drain -------------------------------------------------------------------------------------


def test_sigterm_lets_open_connections_finish_and_takes_no_new_ones(served: Serve) -> None:
    sidecar = served("counter", "drain-seconds = 30")
    held = Held(sidecar.port)
    assert held.exchange(b"a", 3) == b"1:a"
    sidecar.signal(signal.SIGTERM)
    sidecar.wait_for(r"SIGTERM: draining; 1 open streams")
    time.sleep(SETTLE)
    assert sidecar.process.poll() is None
    assert held.exchange(b"b", 3) == b"2:b"  # the same stream, the same sandbox
    assert refused(sidecar.port)
    assert held.exchange(b"c", 3) == b"3:c"
    held.close()
    started = time.monotonic()
    assert sidecar.process.wait(timeout=10) == 0
    assert time.monotonic() - started < 5  # it went once the stream ended, not at the deadline
    assert "drained" in sidecar.log()


def test_a_drain_ends_what_is_still_open_at_its_deadline(served: Serve) -> None:
    sidecar = served("counter", "drain-seconds = 2")
    held = Held(sidecar.port)
    assert held.exchange(b"a", 3) == b"1:a"
    started = time.monotonic()
    sidecar.signal(signal.SIGTERM)
    assert sidecar.process.wait(timeout=10) == 0
    assert 2 <= time.monotonic() - started < 2 + 5
    assert held.ended(timeout=5)
    assert "drain deadline of 2 s passed: closing 1 connections with 1 open streams" in \
        sidecar.log()


def test_a_drain_sends_goaway_naming_the_last_stream_and_waits_for_it(compile_cache: Path) -> None:
    """On the wire, without Envoy: a shutdown notice, then the GOAWAY naming the last stream
    taken; nothing listens any more, a later stream goes unanswered, the open one is still
    served, and the drain ends with it."""
    spec = StackSpec(plugins={"pass-through": "pass-through"}, tcp={"p": "pass-through"})
    with Stack(spec, compile_cache) as stack:
        server = stack.sidecar.server
        assert server is not None
        client = RawClient(stack.sidecar.port).handshake()
        headers = [(":path", METHOD) if name == ":path" else (name, value)
                   for name, value in client.request_headers()]
        client.send(client.request(1, [*headers, ("x-hyperfilter-chain", "pass-through")],
                                   end_stream=False))
        drain = asyncio.run_coroutine_threadsafe(server.drain(10), stack.loop.loop)
        seen: list[Frame | None] = []

        def goaway(last: int) -> Decision:
            def decide(frame: Frame | None) -> bool | None:
                seen.append(frame)
                return (isinstance(frame, GoAwayFrame) and frame.last_stream_id == last
                        and frame.error_code == ErrorCodes.NO_ERROR) or None
            return decide

        client.wait_for("the shutdown notice", goaway((1 << 31) - 1))
        client.wait_for("GOAWAY naming stream 1", goaway(1), timeout=SETTLE + 1)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", stack.sidecar.port), timeout=2)
        client.send(client.request(3, headers))
        time.sleep(0.2)
        assert not drain.done()  # stream 1 is still open
        client.send(DataFrame(1, b"", flags=["END_STREAM"]))

        def closed(frame: Frame | None) -> bool | None:
            seen.append(frame)
            return frame is None or None

        client.wait_for("the connection closed", closed)
        drain.result(timeout=5)
        answered = {frame.stream_id for frame in seen if isinstance(frame, HeadersFrame)}
        assert answered == {1}
        client.close()


# --- reload ------------------------------------------------------------------------------------


def test_reload_gives_new_streams_the_new_plugins_and_open_ones_keep_theirs(
        served: Serve, tmp_path: Path) -> None:
    pid_file = tmp_path / "sidecar.pid"
    sidecar = served("counter", f'pid-file = "{pid_file}"')
    assert pid_file.read_text().strip() == str(sidecar.process.pid)
    held = Held(sidecar.port)
    assert held.exchange(b"a", 3) == b"1:a"
    set_plugin(tmp_path, "pass-through")
    result = subprocess.run([HYPERFILTER, "reload", "--config", str(tmp_path / "sidecar.toml")],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    sidecar.wait_for(r"reloaded: 1 plugins")
    assert tcp_exchange(sidecar.port, [b"c"]).replies == [b"c"]  # pass-through now
    assert held.exchange(b"b", 3) == b"2:b"  # still its counter sandbox
    held.close()
    sidecar.signal(signal.SIGTERM)
    assert sidecar.process.wait(timeout=10) == 0
    assert not pid_file.exists()


def test_a_reload_that_fails_keeps_the_plugins_it_had(served: Serve, tmp_path: Path) -> None:
    sidecar = served("counter")
    broken = not_wasm(tmp_path)
    set_plugin(tmp_path, broken)
    sidecar.signal(signal.SIGHUP)
    failed = sidecar.wait_for(r"reload failed; the plugins loaded before go on serving: (.*)")
    assert "counter.wasm is not WebAssembly" in failed.group(1)
    assert tcp_exchange(sidecar.port, [b"a"]).replies == [b"1:a"]
    set_plugin(tmp_path, "pass-through")  # good, but with a misspelt field beside it
    config = tmp_path / "sidecar.toml"
    config.write_text('lisen = "127.0.0.1:1"\n' + config.read_text())
    sidecar.signal(signal.SIGHUP)
    failed = sidecar.wait_for(r"reload failed; the plugins loaded before go on serving: (.*)",
                              count=2)
    assert "lisen: unknown field" in failed.group(1)
    assert tcp_exchange(sidecar.port, [b"b"]).replies == [b"1:b"]
    assert sidecar.process.poll() is None


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_workers_pass_reload_and_drain_on_to_every_worker(served: Serve, tmp_path: Path,
                                                         socket_dir: Path, kind: str) -> None:
    listen = f'listen = "unix:{socket_dir / "s.sock"}"' if kind == "unix" else ""
    sidecar = served("counter", f"drain-seconds = 30\n{listen}", workers=2)
    if kind == "unix":  # worker i on path.i
        assert sorted(path.name for path in socket_dir.iterdir()) == ["s.sock.0", "s.sock.1"]
    held = Held(sidecar.port)
    assert held.exchange(b"a", 3) == b"1:a"
    set_plugin(tmp_path, "pass-through")
    sidecar.signal(signal.SIGHUP)
    sidecar.wait_for(r"w0 hyperfilter: reloaded")
    sidecar.wait_for(r"w1 hyperfilter: reloaded")
    # round robin: these reach both workers
    assert [tcp_exchange(sidecar.port, [b"c"]).replies for _ in range(4)] == [[b"c"]] * 4
    assert held.exchange(b"b", 3) == b"2:b"
    sidecar.signal(signal.SIGTERM)
    time.sleep(SETTLE)
    assert held.exchange(b"c", 3) == b"3:c"
    held.close()
    assert sidecar.process.wait(timeout=15) == 0
    assert "starting it again" not in sidecar.log()
    assert not any(socket_dir.iterdir())


@pytest.mark.parametrize("case", ["no pid-file", "not hyperfilter", "no such process"])
def test_reload_refuses_what_is_not_a_running_sidecar(tmp_path: Path, case: str) -> None:
    config = write_config(tmp_path, f'p = "{plugin_dir("counter")}"')
    other = subprocess.Popen(["sleep", "30"])
    if case == "no such process":
        other.kill()
        other.wait()
    try:
        args = ["--config", str(config)] if case == "no pid-file" else ["--pid", str(other.pid)]
        result = subprocess.run([HYPERFILTER, "reload", *args], capture_output=True, text=True,
                                timeout=30, check=False)
    finally:
        other.kill()
        other.wait()
    assert result.returncode == 2
    assert {"no pid-file": "sets no pid-file", "not hyperfilter": "is not a hyperfilter sidecar",
            "no such process": f"no process {other.pid}"}[case] in result.stderr


# --- where it listens --------------------------------------------------------------------------


@dataclass(frozen=True)
class Certificates:
    ca: Path
    server: tuple[Path, Path]  # certificate, key: signed by ca, for SERVER_NAME
    client: tuple[Path, Path]  # signed by ca
    stranger: tuple[Path, Path]  # a client certificate signed by another CA


SERVER_NAME = "sidecar.test"


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl command to make test certificates with")
    directory = tmp_path_factory.mktemp("certificates")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=directory, check=True, capture_output=True)

    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def authority(name: str) -> None:
        run("req", "-x509", *key, "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
            "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign")

    def leaf(name: str, ca: str, extensions: str) -> tuple[Path, Path]:
        (directory / f"{name}.ext").write_text(extensions)
        run("req", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")
        return directory / f"{name}.pem", directory / f"{name}.key"

    authority("ca")
    authority("other-ca")
    return Certificates(
        directory / "ca.pem",
        leaf("server", "ca", f"subjectAltName=DNS:{SERVER_NAME}\nextendedKeyUsage=serverAuth\n"),
        leaf("client", "ca", "extendedKeyUsage=clientAuth\n"),
        leaf("stranger", "other-ca", "extendedKeyUsage=clientAuth\n"))


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """Short enough for a Unix socket's path (108 bytes at most)."""
    with tempfile.TemporaryDirectory(prefix="hf-") as directory:
        yield Path(directory)


def listening_spec(socket_dir: Path, unix: bool, certificates: Certificates | None = None,
                   client: tuple[Path, Path] | None = None) -> StackSpec:
    """A counter behind the sidecar on TCP or a Unix socket; with `certificates`, over TLS,
    and with a `client` certificate for Envoy, mTLS."""
    tls: dict[str, str] | None = None
    envoy_tls = None
    if certificates is not None:
        tls = {"cert": str(certificates.server[0]), "key": str(certificates.server[1])}
        if client is not None:
            tls["client-ca"] = str(certificates.ca)
        envoy_tls = SidecarTls(certificates.ca, SERVER_NAME, *(client or (None, None)))
    return StackSpec(plugins={"counter": "counter"}, tcp={"counter": "counter"},
                     listen=f"unix:{socket_dir / 'sidecar.sock'}" if unix else "127.0.0.1:0",
                     tls=tls, envoy_tls=envoy_tls)


@pytest.mark.parametrize(("unix", "security"), [
    (False, None), (True, None), (False, "tls"), (False, "mtls"), (True, "mtls")],
    ids=["tcp", "unix", "tcp+tls", "tcp+mtls", "unix+mtls"])
def test_each_kind_of_socket_serves_envoy(unix: bool, security: str | None, socket_dir: Path,
                                         compile_cache: Path,
                                         request: pytest.FixtureRequest) -> None:
    certificates = request.getfixturevalue("certificates") if security else None
    client = certificates.client if certificates and security == "mtls" else None
    with Stack(listening_spec(socket_dir, unix, certificates, client), compile_cache) as stack:
        assert str(stack.sidecar.address).startswith("unix:" if unix else "127.0.0.1:")
        assert tcp_exchange(stack.ports["counter"], [b"a", b"b"]).replies == [b"1:a", b"2:b"]
        handshakes = stack.envoy.counter("cluster.hyperfilter.ssl.handshake")
        assert handshakes >= 1 if security else handshakes == 0
    if unix:
        assert not (socket_dir / "sidecar.sock").exists()  # removed when the sidecar stopped


def test_mtls_refuses_a_client_certificate_from_another_ca(
        certificates: Certificates, socket_dir: Path, compile_cache: Path) -> None:
    spec = listening_spec(socket_dir, False, certificates, client=certificates.stranger)
    with Stack(spec, compile_cache) as stack:
        assert refused(stack.ports["counter"])
        assert stack.sidecar.server.open_streams == 0  # type: ignore[union-attr]


def test_a_unix_socket_a_live_sidecar_listens_on_is_not_taken(
        socket_dir: Path, compile_cache: Path) -> None:
    spec = listening_spec(socket_dir, unix=True)
    with Stack(spec, compile_cache) as stack:
        second = Sidecar(stack.config)
        with pytest.raises(OSError, match="another process listens on"):
            stack.loop.run(second.start)
        stack.loop.run(second.stop)
        assert tcp_exchange(stack.ports["counter"], [b"a"]).replies == [b"1:a"]
    stale = socket.socket(socket.AF_UNIX)  # bound, never listening: what a killed sidecar leaves
    stale.bind(str(socket_dir / "sidecar.sock"))
    stale.close()
    with Stack(spec, compile_cache) as stack:
        assert tcp_exchange(stack.ports["counter"], [b"a"]).replies == [b"1:a"]
    assert not (socket_dir / "sidecar.sock").exists()


def test_envoy_config_renders_a_unix_socket_with_mtls(certificates: Certificates,
                                                       tmp_path: Path) -> None:
    """What the command prints is what the tests above ran Envoy with, and Envoy accepts it."""
    cert, key = certificates.client
    result = subprocess.run(
        [HYPERFILTER, "envoy-config", "--tcp", "10000/counter/127.0.0.1:9000",
         "--sidecar", "unix:/run/hf.sock.0", "--sidecar", "unix:/run/hf.sock.1",
         "--sidecar-ca", str(certificates.ca), "--sidecar-server-name", SERVER_NAME,
         "--client-cert", str(cert), "--client-key", str(key)],
        capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    listener = TcpListener("tcplistener-10000", "counter", Upstream("127.0.0.1", 9000), 10000)
    assert result.stdout.strip() == render_bootstrap(
        ["unix:/run/hf.sock.0", "unix:/run/hf.sock.1"], [listener], 9901,
        SidecarTls(certificates.ca, SERVER_NAME, cert, key)).strip()
    bootstrap = tmp_path / "envoy.yaml"
    bootstrap.write_text(result.stdout)
    validated = subprocess.run([str(envoy_binary()), "--mode", "validate", "-c", str(bootstrap)],
                               capture_output=True, text=True, timeout=60, check=False)
    assert validated.returncode == 0, validated.stdout + validated.stderr
