"""Load generators, each its own process (uvloop), so the client never competes with what it
measures for one GIL.

    python -m bench.load throughput PORT CONNECTIONS SECONDS SIZE   # prints round trips
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


async def throughput(port: int, connections: int, seconds: float, size: int) -> None:
    payload = b"x" * size
    done = 0
    deadline = time.monotonic() + seconds

    async def client() -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await _round_trip(reader, writer, payload)  # the stream and its sandbox exist now
        await start.wait()
        while time.monotonic() < deadline:
            await _round_trip(reader, writer, payload)
            done += 1
        writer.close()

    start = asyncio.Event()
    tasks = [asyncio.ensure_future(client()) for _ in range(connections)]
    await asyncio.sleep(0.2 + connections / 500)
    began = time.monotonic()
    deadline = began + seconds
    start.set()
    await asyncio.gather(*tasks)
    print(json.dumps({"round_trips": done, "seconds": time.monotonic() - began}), flush=True)


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
    if kind == "throughput":
        uvloop.run(throughput(int(args[0]), int(args[1]), float(args[2]), int(args[3])))
    else:
        uvloop.run(hold(int(args[0]), int(args[1])))
