"""QuietWork: deferred work waits for a quiet moment, but never past its longest wait."""

from __future__ import annotations

from collections.abc import Callable

from sidecar.quiet_work import QuietWork


class ClockLoop:
    """The two loop methods QuietWork uses, on a clock the test moves."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[tuple[float, Callable[[], None]]] = []

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[[], None]) -> None:
        self.timers.append((self.now + delay, callback))

    def call_soon(self, callback: Callable[[], None]) -> None:
        self.call_later(0, callback)

    def advance(self, seconds: float) -> None:
        """Move the clock, running each timer that falls due, in order."""
        end = self.now + seconds
        while due := sorted((t for t in self.timers if t[0] <= end), key=lambda t: t[0]):
            at, callback = due[0]
            self.timers.remove(due[0])
            self.now = max(self.now, at)
            callback()
        self.now = end


def quiet_work(loop: ClockLoop) -> QuietWork:
    return QuietWork(loop, quiet=0.001, longest_wait=0.010)  # type: ignore[arg-type]


def test_work_runs_once_no_bytes_arrived_for_the_quiet_time() -> None:
    loop = ClockLoop()
    work = quiet_work(loop)
    done: list[float] = []
    work.defer(lambda: done.append(loop.now))
    for _ in range(6):  # bytes every 0.5 ms for 3 ms
        loop.advance(0.0005)
        work.activity()
    assert done == []
    loop.advance(0.003)
    assert len(done) == 1 and 0.004 <= done[0] <= 0.005  # quiet for 1 ms, checked each ms


def test_while_bytes_keep_coming_the_check_runs_once_per_quiet_period() -> None:
    """Not once per loop turn: the event loop's timers count whole milliseconds."""
    loop = ClockLoop()
    work = quiet_work(loop)
    checks = 0
    original = work._run_next

    def counted() -> None:
        nonlocal checks
        checks += 1
        original()

    work._run_next = counted  # type: ignore[method-assign]
    work.defer(lambda: None)
    for _ in range(16):  # bytes every 0.5 ms for 8 ms
        loop.advance(0.0005)
        work.activity()
    assert checks <= 9


def test_constant_activity_delays_work_no_longer_than_the_longest_wait() -> None:
    loop = ClockLoop()
    work = quiet_work(loop)
    done: list[float] = []
    work.defer(lambda: done.append(loop.now))
    for _ in range(40):  # bytes every 0.5 ms for 20 ms
        loop.advance(0.0005)
        work.activity()
    assert len(done) == 1 and 0.010 <= done[0] <= 0.0115


def test_bytes_arriving_between_pieces_put_off_the_rest_and_a_failure_skips_only_itself(
) -> None:
    loop = ClockLoop()
    work = quiet_work(loop)
    done: list[int] = []

    def first() -> None:
        done.append(1)
        work.activity()  # a message came in while it ran

    def fails() -> None:
        raise RuntimeError("broken")

    work.defer(first)
    work.defer(fails)
    work.defer(lambda: done.append(3))
    loop.advance(0.0015)
    assert done == [1] and len(work) == 2  # the rest waits for the next quiet moment
    loop.advance(0.002)
    assert done == [1, 3] and len(work) == 0


def test_run_all_empties_the_queue_and_a_late_timer_finds_nothing() -> None:
    loop = ClockLoop()
    work = quiet_work(loop)
    done: list[int] = []
    work.defer(lambda: done.append(1))
    work.run_all()
    assert done == [1]
    loop.advance(0.02)
    assert done == [1]
    work.defer(lambda: done.append(2))  # scheduling works again afterwards
    loop.advance(0.002)
    assert done == [1, 2]


def test_under_constant_load_the_queue_holds_no_more_than_the_longest_waits_worth() -> None:
    loop = ClockLoop()
    work = quiet_work(loop)
    done: list[float] = []

    def record_wait(queued_at: float) -> Callable[[], None]:
        return lambda: done.append(loop.now - queued_at)

    for _ in range(400):  # for 200 ms: bytes and three new pieces of work every 0.5 ms
        for _ in range(3):
            work.defer(record_wait(loop.now))
        work.activity()
        loop.advance(0.0005)
    assert len(work) <= 3 * (0.010 / 0.0005 + 1)
    assert len(done) >= 3 * 400 - 3 * (0.010 / 0.0005 + 1)
    assert max(done) <= 0.0115  # its longest wait, and at most one check period more
