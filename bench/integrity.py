"""Data integrity under load: TCP connections to an echo path, each sending a seeded random
payload in random-sized chunks while reading the echo, checking that every byte comes back
once and in order.

    result = await concurrent_flows(port, connections=100, max_size=256 << 10)
    result = await one_big_flow(port, size=64 << 20)
    assert result.intact, result.summary()

Nothing is kept of a payload but what is still in flight (sent, not yet echoed): each arrival
is compared with it, which finds the first differing offset at once, and both directions keep
a running SHA-256, so a caller can also check what the far end saw (`Flow.sent_sha256`).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass

EXCERPT = 16  # bytes shown of what was expected and what arrived
READ_SIZE = 256 << 10


@dataclass(frozen=True)
class Corruption:
    """Where the echo first differed from what was sent."""

    offset: int  # in the connection's byte stream
    expected: str  # hex of what was sent from `offset` (empty: nothing was sent there yet)
    arrived: str  # hex of what arrived at `offset`
    sent_at: int | None  # where the arrived bytes were sent, if still in flight (reordering)


@dataclass(frozen=True)
class Flow:
    """One connection's outcome."""

    index: int
    size: int  # bytes it was to send
    sent: int
    received: int  # bytes that came back intact, in order
    sent_sha256: str  # of the `sent` bytes
    received_sha256: str  # of the `received` bytes
    seconds: float  # from connecting to its last byte back (or its failure)
    died: str | None = None  # reset, early EOF, stall, deadline: how it ended early
    corruption: Corruption | None = None

    @property
    def intact(self) -> bool:
        return (self.died is None and self.corruption is None and self.sent == self.size
                and self.received == self.size and self.sent_sha256 == self.received_sha256)


@dataclass(frozen=True)
class FlowOptions:
    max_chunk: int = 64 << 10  # each write is 1..max_chunk bytes
    deadline_seconds: float = 60.0  # for the whole run: what is still open then dies
    stall_seconds: float = 10.0  # a connection where no byte moves that long dies
    open_at_once: int = 64  # connections connecting at a time (all stay open)


@dataclass(frozen=True)
class IntegrityResult:
    flows: list[Flow]
    seconds: float  # wall time of the whole run
    seed: int
    options: FlowOptions

    def sent_by(self, flow: Flow) -> bytes:
        """What `flow` sent, again: to compare with what the far end received."""
        chunks = payload(self.seed, flow.index, flow.size, self.options.max_chunk)
        return b"".join(chunks)[:flow.sent]

    @property
    def died(self) -> list[Flow]:
        return [flow for flow in self.flows if flow.died is not None]

    @property
    def corrupted(self) -> list[Flow]:
        return [flow for flow in self.flows if flow.corruption is not None]

    @property
    def completed(self) -> int:
        return sum(flow.intact for flow in self.flows)

    @property
    def bytes_sent(self) -> int:
        return sum(flow.sent for flow in self.flows)

    @property
    def bytes_received(self) -> int:
        return sum(flow.received for flow in self.flows)

    @property
    def intact(self) -> bool:
        return self.completed == len(self.flows)

    def summary(self, shown: int = 5) -> str:
        """One line of totals, then the first few failed connections."""
        durations = [flow.seconds for flow in self.flows] or [0.0]
        lines = [f"{self.completed}/{len(self.flows)} connections intact, "
                 f"{len(self.died)} died, {len(self.corrupted)} corrupted; "
                 f"{self.bytes_sent} bytes sent, {self.bytes_received} back intact; "
                 f"{self.seconds:.1f} s (per connection p50 {statistics.median(durations):.2f} s,"
                 f" max {max(durations):.2f} s)"]
        for flow in [flow for flow in self.flows if not flow.intact][:shown]:
            what = flow.died or f"corrupted: {flow.corruption}"
            lines.append(f"  #{flow.index}: {flow.received}/{flow.sent} of {flow.size} bytes "
                         f"back, {what}")
        return "\n".join(lines)


class DataCorrupted(Exception):
    """The echo differs from what was sent."""

    def __init__(self, corruption: Corruption) -> None:
        super().__init__(corruption)
        self.corruption = corruption


class EarlyEof(Exception):
    """The echo ended before every byte came back."""


class _Echo:
    """What one connection sent and what came back of it."""

    def __init__(self) -> None:
        self.in_flight = bytearray()  # sent, not yet echoed
        self.sent = 0
        self.received = 0
        self.sent_hash = hashlib.sha256()
        self.received_hash = hashlib.sha256()

    def sending(self, chunk: bytes) -> None:
        self.in_flight += chunk
        self.sent += len(chunk)
        self.sent_hash.update(chunk)

    def arrived(self, data: bytes) -> None:
        """Match `data` against the oldest bytes in flight; raise at the first mismatch."""
        with memoryview(self.in_flight) as window, window[:len(data)] as expected:
            intact = expected == data
        if intact:
            self._confirm(data)
            return
        at = next((i for i, (a, b) in enumerate(zip(self.in_flight, data, strict=False))
                   if a != b), min(len(self.in_flight), len(data)))
        self._confirm(data[:at])
        arrived = data[at:at + EXCERPT]
        found = self.in_flight.find(arrived) if len(arrived) == EXCERPT else -1
        raise DataCorrupted(Corruption(
            offset=self.received, expected=self.in_flight[:EXCERPT].hex(), arrived=arrived.hex(),
            sent_at=self.received + found if found >= 0 else None))

    def _confirm(self, data: bytes) -> None:
        del self.in_flight[:len(data)]
        self.received += len(data)
        self.received_hash.update(data)


class _Progress:
    """One time limit for a connection: its deadline, or `stall` seconds without a byte
    moving either way, whichever comes first."""

    def __init__(self, deadline: float, stall: float) -> None:
        self.deadline = deadline
        self.stall = stall
        self.limit = asyncio.timeout_at(self._next())

    def _next(self) -> float:
        return min(self.deadline, asyncio.get_running_loop().time() + self.stall)

    def moved(self) -> None:
        self.limit.reschedule(self._next())

    def why(self) -> str:
        if asyncio.get_running_loop().time() >= self.deadline:
            return "deadline"
        return f"stalled: nothing moved for {self.stall:g} s"


def payload(seed: int, index: int, size: int, max_chunk: int) -> Iterator[bytes]:
    """Connection `index`'s bytes, in the chunks it writes them: the same for the same
    arguments, so a caller can check what the far end received."""
    rng = random.Random(f"{seed}:{index}")
    left = size
    while left:
        chunk = rng.randbytes(min(left, rng.randint(1, max_chunk)))
        left -= len(chunk)
        yield chunk


async def _send(writer: asyncio.StreamWriter, echo: _Echo, chunks: Iterator[bytes],
                progress: _Progress) -> None:
    for chunk in chunks:
        echo.sending(chunk)  # before writing: its echo may be read before write returns
        writer.write(chunk)
        await writer.drain()
        progress.moved()


async def _receive(reader: asyncio.StreamReader, echo: _Echo, size: int,
                   progress: _Progress) -> None:
    while echo.received < size:
        data = await reader.read(READ_SIZE)
        if not data:
            raise EarlyEof(f"EOF after {echo.received} of {size} bytes")
        echo.arrived(data)
        progress.moved()


async def _flow(port: int, seed: int, index: int, size: int, options: FlowOptions,
                opening: asyncio.Semaphore, deadline: float) -> Flow:
    echo = _Echo()
    died: str | None = None
    corruption: Corruption | None = None
    began = time.monotonic()
    progress = _Progress(deadline, options.stall_seconds)
    try:
        async with progress.limit:
            async with opening:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                tasks = [asyncio.ensure_future(_receive(reader, echo, size, progress)),
                         asyncio.ensure_future(_send(
                             writer, echo, payload(seed, index, size, options.max_chunk),
                             progress))]
                try:
                    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
                finally:
                    for task in tasks:
                        task.cancel()
                errors = [error for task in tasks
                          if task in done and (error := task.exception()) is not None]
                if errors:
                    raise errors[0]  # the receiver's, when both failed: it says more
            finally:
                writer.transport.abort()  # no lingering: a dead peer must not hold the run
    except DataCorrupted as error:
        corruption = error.corruption
    except TimeoutError:
        died = progress.why()
    except (OSError, EarlyEof) as error:
        died = f"{type(error).__name__}: {error}"
    return Flow(index=index, size=size, sent=echo.sent, received=echo.received,
                sent_sha256=echo.sent_hash.hexdigest(),
                received_sha256=echo.received_hash.hexdigest(),
                seconds=time.monotonic() - began, died=died, corruption=corruption)


async def run_flows(port: int, sizes: list[int], seed: int = 0,
                    options: FlowOptions = FlowOptions()) -> IntegrityResult:
    """One connection to 127.0.0.1:`port` per entry of `sizes`, all at once, each sending that
    many bytes of its own seeded random stream."""
    deadline = asyncio.get_running_loop().time() + options.deadline_seconds
    opening = asyncio.Semaphore(options.open_at_once)
    began = time.monotonic()
    flows = await asyncio.gather(*(
        _flow(port, seed, index, size, options, opening, deadline)
        for index, size in enumerate(sizes)))
    return IntegrityResult(flows=list(flows), seconds=time.monotonic() - began, seed=seed,
                           options=options)


async def concurrent_flows(port: int, connections: int, max_size: int, seed: int = 0,
                           options: FlowOptions = FlowOptions()) -> IntegrityResult:
    """`connections` at once, each sending a random size of 1..`max_size` bytes."""
    sizes = random.Random(seed)
    return await run_flows(port, [sizes.randint(1, max_size) for _ in range(connections)],
                           seed, options)


async def one_big_flow(port: int, size: int, seed: int = 0,
                       options: FlowOptions = FlowOptions()) -> IntegrityResult:
    """One connection sending `size` bytes while it reads them back."""
    return await run_flows(port, [size], seed, options)
