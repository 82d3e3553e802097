"""Upstream servers on loopback for the demo, tests and benchmarks: what sits behind Envoy
(and the Redis server that shared-state may use).

Each records what it received, so a caller can see both ends of a filtered connection.
"""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

CARD = "4111 1111 1111 1111"  # a well-known test number (Luhn-valid)


class EchoServer:
    """TCP: sends back what it receives. `replies` maps a trigger to what is sent back instead
    (the demo's upstream reveals a secret that way)."""

    def __init__(self, replies: dict[bytes, bytes] | None = None) -> None:
        self.replies = replies or {}
        self.received: list[bytearray] = []  # one per connection, in accept order
        self._server: asyncio.Server | None = None

    async def start(self, host: str = "127.0.0.1") -> int:
        self._server = await asyncio.start_server(self._serve, host, 0)
        return self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen = bytearray()
        self.received.append(seen)
        try:
            while data := await reader.read(65536):
                seen += data
                writer.write(next((reply for trigger, reply in self.replies.items()
                                   if trigger in data), data))
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


def _read_chunked(stream: io.BufferedIOBase, trailers: dict[str, str]) -> bytes:
    body = b""
    while size := int(stream.readline().split(b";")[0].strip() or b"0", 16):
        body += stream.read(size)
        stream.readline()
    while (line := stream.readline().strip()):
        name, _, value = line.decode("latin-1").partition(":")
        trailers[name.strip().lower()] = value.strip()
    return body


class HttpUpstream:
    """HTTP/1.1 in a thread. `POST /echo` answers with the request body; anything else with
    JSON describing the request it received, and a card number for redactors to mask."""

    def __init__(self) -> None:
        self.requests: list[dict[str, object]] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                trailers: dict[str, str] = {}
                if self.headers.get("transfer-encoding", "").lower() == "chunked":
                    body = _read_chunked(self.rfile, trailers)
                else:
                    length = int(self.headers.get("content-length") or 0)
                    body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                upstream.requests.append({"method": self.command, "path": self.path,
                                          "headers": headers, "body": body,
                                          "trailers": trailers})
                if self.command == "POST" and self.path == "/echo":
                    reply = body
                else:
                    reply = json.dumps({"path": self.path, "user": headers.get("x-auth-user"),
                                        "card": CARD}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            do_GET = do_POST = _answer  # noqa: N815 - http.server's naming

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self._httpd.server_port

    def start(self) -> int:
        self._thread.start()
        return self.port

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class RedisServer:
    """A real `redis-server` of its own, on a Unix socket in `directory`, keeping nothing on
    disk. FileNotFoundError if it is not installed (Debian: redis-server)."""

    START_SECONDS = 10.0

    def __init__(self, directory: Path) -> None:
        server = shutil.which("redis-server")
        if server is None:
            raise FileNotFoundError("redis-server is not installed (Debian package "
                                    "redis-server; `make test` installs it)")
        self.socket = directory / "redis.sock"
        self.url = f"unix://{self.socket}"
        self._process = subprocess.Popen(
            [server, "--port", "0", "--unixsocket", str(self.socket), "--save", "",
             "--appendonly", "no", "--dir", str(directory)], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + self.START_SECONDS
        while not self.socket.exists():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start (exit status "
                                   f"{self._process.returncode})")
            time.sleep(0.02)

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
        self._process.wait(timeout=self.START_SECONDS)
