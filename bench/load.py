"""Load generators, each its own process (uvloop), so the client never competes with what it
measures for one GIL.

    python -m bench.load throughput PORT CONNECTIONS SECONDS SIZE   # prints round trips
    python -m bench.load keep-busy PORT CONNECTIONS SECONDS SIZE    # the same, and "ready"
                                                                    # once they begin
    python -m bench.load hold PORT CONNECTIONS   # prints "ready" once all are open and have
                                                 # echoed a byte (else why not); closes them at
                                                 # end of stdin
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import uvloop


async def _round_trip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      payload: bytes) -> None:
    writer.write(payload)
    await reader.readexactly(len(payload))


async def throughput(port: int, connections: int, seconds: float, size: int,
                     announce: bool = False) -> None:
    """Closed-loop round trips for `seconds` once every connection has had its first (so its
    stream and sandbox exist); with `announce`, says "ready" then. A connection that fails
    stops and is counted."""
    payload = b"x" * size
    done = failed = settled = 0
    all_settled, start = asyncio.Event(), asyncio.Event()
    deadline = 0.0

    def settle() -> None:
        nonlocal settled
        settled += 1
        if settled == connections:
            all_settled.set()

    async def client() -> None:
        nonlocal done, failed
        writer, first_done = None, False
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await _round_trip(reader, writer, payload)
            first_done = True
            settle()
            await start.wait()
            while time.monotonic() < deadline:
                await _round_trip(reader, writer, payload)
                done += 1
        except (OSError, asyncio.IncompleteReadError):
            failed += 1
            if not first_done:
                settle()
        finally:
            if writer is not None:
                writer.close()

    tasks = [asyncio.ensure_future(client()) for _ in range(connections)]
    await asyncio.wait_for(all_settled.wait(), timeout=120)
    began = time.monotonic()
    deadline = began + seconds
    start.set()
    if announce:
        print("ready", flush=True)
    await asyncio.gather(*tasks)
    print(json.dumps({"round_trips": done, "failed": failed,
                      "seconds": time.monotonic() - began}), flush=True)


async def hold(port: int, connections: int) -> None:
    # Opened 64 at a time: a burst of hundreds of new streams at once would make the last
    # ones wait past Envoy's message timeout (1 s) on the kvm tier's new VMs.
    opening = asyncio.Semaphore(64)
    held = []

    async def open_one() -> None:
        async with opening:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await _round_trip(reader, writer, b"x")
            held.append(writer)

    outcomes = await asyncio.gather(*(open_one() for _ in range(connections)),
                                    return_exceptions=True)
    failures = [repr(outcome) for outcome in outcomes if isinstance(outcome, BaseException)]
    if failures:
        print(f"{len(failures)} of {connections} failed, first: {failures[0]}", flush=True)
        return
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for writer in held:
        writer.close()


if __name__ == "__main__":
    kind, *args = sys.argv[1:]
    if kind in ("throughput", "keep-busy"):
        uvloop.run(throughput(int(args[0]), int(args[1]), float(args[2]), int(args[3]),
                              announce=kind == "keep-busy"))
    else:
        uvloop.run(hold(int(args[0]), int(args[1])))
