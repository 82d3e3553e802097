"""Slow lanes: at most `count` slow events at once across processes, a lane freed when its
holder dies, the offload threads at the lowest normal priority, the configuration's
`slow-plugin-cores`, and the runtime directory they live in."""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import os
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import cast

import pytest

from sidecar.config import ConfigError, load_config
from sidecar.offload import NICENESS, Offload, TakingTurns
from sidecar.registry import Chain
from sidecar.runtime import PREFIX, Runtime
from sidecar.slow_lanes import SlowLanes
from sidecar.streams import StreamPlugins

MakeLanes = Callable[[int], SlowLanes]
WAIT = 10.0  # bounds every wait below; none is expected to take long
_spawn = multiprocessing.get_context("spawn")  # as the workers are started


def hold_a_lane(lanes: SlowLanes, talk: Connection) -> None:
    """In another process: take a lane, say so, keep it until told (or killed)."""
    holder = lanes.holder(0)

    def held() -> None:
        talk.send("holding")
        talk.recv()

    holder.run(held)
    holder.close()


@pytest.fixture
def make_lanes(tmp_path: Path) -> MakeLanes:
    made = itertools.count()

    def make(count: int) -> SlowLanes:
        return SlowLanes.create(tmp_path / f"lanes-{next(made)}", count)

    return make


def other_process_holding(lanes: SlowLanes) -> tuple[multiprocessing.process.BaseProcess,
                                                       Connection]:
    ours, theirs = _spawn.Pipe()
    process = _spawn.Process(target=hold_a_lane, args=(lanes, theirs), daemon=True)
    process.start()
    assert ours.poll(WAIT) and ours.recv() == "holding"
    return process, ours


def run_in_thread(lanes: SlowLanes) -> threading.Event:
    """A lane taken on a thread of this process; the event is set once it runs."""
    started = threading.Event()

    def take() -> None:
        holder = lanes.holder(0)
        holder.run(started.set)
        holder.close()

    threading.Thread(target=take, daemon=True).start()
    return started


def test_one_lane_is_held_by_one_process_at_a_time(make_lanes: MakeLanes) -> None:
    lanes = make_lanes(1)
    process, talk = other_process_holding(lanes)
    started = run_in_thread(lanes)
    assert not started.wait(0.3), "took the only lane while another process held it"
    talk.send("release")
    assert started.wait(WAIT)
    process.join(WAIT)


def test_a_second_lane_is_free_while_the_first_is_held(make_lanes: MakeLanes) -> None:
    lanes = make_lanes(2)
    process, talk = other_process_holding(lanes)
    assert run_in_thread(lanes).wait(WAIT)
    talk.send("release")
    process.join(WAIT)


def test_a_lane_is_freed_when_its_holder_dies(make_lanes: MakeLanes) -> None:
    lanes = make_lanes(1)
    process, _ = other_process_holding(lanes)
    started = run_in_thread(lanes)
    assert not started.wait(0.3)
    assert process.pid is not None
    os.kill(process.pid, signal.SIGKILL)
    assert started.wait(WAIT)
    process.join(WAIT)


def test_offloaded_events_run_at_the_lowest_priority_and_are_counted(
        make_lanes: MakeLanes) -> None:
    class SlowPlugins:  # what Offload reads and sets of a stream's plugins
        slow = True
        handoff = None
        chain = Chain("slow", ())

    async def scenario() -> None:
        offload = Offload(asyncio.get_running_loop(), make_lanes(1))
        release = threading.Event()
        policies: list[tuple[int, int]] = []

        def event() -> int:
            policies.append((os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0)))
            release.wait(WAIT)
            return 7

        events = [offload.stream(cast(StreamPlugins, SlowPlugins())).run(event)
                  for _ in range(2)]
        while not policies:
            await asyncio.sleep(0.01)
        assert (offload.running, offload.waiting) == (1, 1)  # one lane: the other waits
        release.set()
        for answer in events:
            assert isinstance(answer, asyncio.Future)
            assert await answer == 7
        assert policies == [(os.SCHED_BATCH, NICENESS)] * 2
        assert (offload.running, offload.waiting) == (0, 0)
        await offload.close()

    asyncio.run(scenario())


def test_slow_plugin_cores_from_the_configuration(tmp_path: Path) -> None:
    path = tmp_path / "sidecar.toml"
    path.write_text("slow-plugin-cores = 3\n[plugins]\n")
    assert load_config(path).slow_plugin_cores == 3
    path.write_text("[plugins]\n")
    assert load_config(path).slow_plugin_cores == max(1, len(os.sched_getaffinity(0)) - 1)
    path.write_text("slow-plugin-cores = 0\n[plugins]\n")
    with pytest.raises(ConfigError, match="slow-plugin-cores"):
        load_config(path)


def test_what_a_killed_sidecar_left_is_removed() -> None:
    dead = subprocess.Popen(["true"])  # its pid, once it has ended, is nobody's
    dead.wait()
    orphan = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{dead.pid}-"))
    live = Runtime.create(1)
    try:
        Runtime.create(1).remove()
        assert not orphan.exists()
        assert live.lanes.directory.exists()  # its creator, this process, is alive
    finally:
        live.remove()


def test_slow_events_are_taken_a_chain_at_a_time_in_turn() -> None:
    turns: TakingTurns[str] = TakingTurns()
    for job in ("a1", "a2", "a3", "a4"):
        turns.put("very slow", job)
    turns.put("barely slow", "b1")
    turns.put("barely slow", "b2")
    assert [turns.take() for _ in range(5)] == ["a1", "b1", "a2", "b2", "a3"]
    assert turns.close() == ["a4"]
    assert turns.take() is None
