"""`hyperfilter fuzz`: the loop. New cases at first, then more and more mutations of corpus
cases. A case joins the corpus (saved to `--corpus` when given) when it makes one of the
plugin's coverage counters reach a bucket no case reached before (hit once, twice, three
times, 4-7, 8-15, 16-31, 32-127, 128 or more, as AFL counts), or, where the plugin cannot be
instrumented, when its outcome has a shape not seen before. A finding of the instrumented
plugin is confirmed on the plugin itself (the counters cost CPU time and 64 KiB of memory),
and minimized there. Live progress: streams/s, events/s, coverage, corpus. A budget of time
or of events, whichever comes first."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.live import Live

from sidecar.fuzz import cases
from sidecar.fuzz.cases import Case
from sidecar.fuzz.generate import Generator, words_of
from sidecar.fuzz.minimize import Minimizer
from sidecar.fuzz.oracles import Finding, Property, check
from sidecar.fuzz.target import Target

SEED_CASES = 32  # generated before mutation starts
REPEAT_EVERY = 4  # one case in this many is run twice, for determinism
REFRESH_SECONDS = 0.25


@dataclass(frozen=True)
class Budget:
    seconds: float
    events: int | None = None  # events delivered, across cases


def _bucket(hits: int) -> int:
    """A counter's value as the bit of its class: 1, 2, 3, 4-7, 8-15, 16-31, 32-127, 128+."""
    floors = (1, 2, 3, 4, 8, 16, 32, 128)
    return max((1 << index for index, floor in enumerate(floors) if hits >= floor), default=0)


_BUCKETS = bytes(_bucket(hits) for hits in range(256))  # for bytes.translate


class Coverage:
    """Which class of hits of which counter some case has reached, as one big integer of
    bits (a byte a counter), so that comparing a case's counters costs microseconds."""

    def __init__(self, counters: int) -> None:
        self.counters = counters
        self._reached = 0

    def add(self, counters: bytes) -> bool:
        """Whether `counters` reach something new (and remember it)."""
        seen = int.from_bytes(counters.translate(_BUCKETS), "little")
        new = seen & ~self._reached
        self._reached |= seen
        return new != 0

    @property
    def sites(self) -> int:
        """Counters some case has hit."""
        return self.counters - self._reached.to_bytes(self.counters, "little").count(0)


@dataclass
class Progress:
    streams: int = 0
    events: int = 0
    started: float = 0.0

    def done(self, found: tuple[Case, Finding] | None, corpus: int,
             coverage: Coverage | None) -> Fuzzed:
        return Fuzzed(found, self.streams, self.events, time.monotonic() - self.started,
                      corpus, coverage.sites if coverage else None)

    def line(self, corpus: int, coverage: Coverage | None, shapes: int) -> str:
        seconds = max(time.monotonic() - self.started, 1e-9)
        reached = (f"coverage {coverage.sites}/{coverage.counters} sites" if coverage
                   else f"outcome shapes {shapes} (no coverage: not instrumented)")
        return (f"{self.streams:,} streams ({self.streams / seconds:,.0f}/s), {self.events:,} "
                f"events ({self.events / seconds:,.0f}/s); {reached}; corpus {corpus}")


@dataclass(frozen=True)
class Fuzzed:
    """What a run did: the first finding `confirm` upheld (and the case), if any; how many
    streams and events in how long; the corpus it ended with; the counters reached."""

    found: tuple[Case, Finding] | None
    streams: int
    events: int
    seconds: float
    corpus: int
    sites: int | None  # None: not instrumented


def fuzz(target: Target, confirm: Callable[[Case], Finding | None], budget: Budget, seed: int,
         corpus_dir: Path | None, properties: dict[str, Property],
         console: Console, seeds: Sequence[Case] = ()) -> Fuzzed:
    """Streams until the first finding `confirm` upholds (`confirm` runs the case on the
    plugin without instrumentation), or the budget is spent. The corpus starts with `seeds`
    (the plugin's own test cases) and the cases in `corpus_dir`."""
    rng = random.Random(seed)
    generator = Generator(rng, words_of(target.plugin.manifest.wasm.read_bytes()))
    saved = sorted(corpus_dir.glob("*.json")) \
        if corpus_dir is not None and corpus_dir.is_dir() else []
    corpus: list[Case] = [*seeds, *(cases.load(path) for path in saved)]
    coverage = Coverage(target.instrumented.counters) if target.instrumented else None
    shapes: set[frozenset[str]] = set()
    progress = Progress(started=time.monotonic())
    deadline = progress.started + budget.seconds
    with Live(console=console, refresh_per_second=1 / REFRESH_SECONDS, transient=True) as live:
        while time.monotonic() < deadline and (budget.events is None
                                               or progress.events < budget.events):
            if progress.streams < SEED_CASES or not corpus or rng.random() < 0.1:
                case = generator.case(rng.choice(target.protocols))
            else:
                case = generator.mutate(rng.choice(corpus))
            outcome = target.run(case)
            progress.streams += 1
            progress.events += len(outcome.answers)
            finding = check(target, case, outcome, properties,
                            repeat=progress.streams % REPEAT_EVERY == 0)
            if finding is not None and (confirmed := confirm(case)) is not None:
                return progress.done((case, confirmed), len(corpus), coverage)
            shape = outcome.signature()
            new_shape = shape not in shapes
            shapes.add(shape)
            if coverage.add(outcome.coverage or b"") if coverage else new_shape:
                corpus.append(case)
                if corpus_dir is not None:
                    corpus_dir.mkdir(parents=True, exist_ok=True)
                    cases.save(case, corpus_dir / f"case-{cases.digest(case)}.json")
            live.update(progress.line(len(corpus), coverage, len(shapes)))
    console.print(progress.line(len(corpus), coverage, len(shapes)))
    return progress.done(None, len(corpus), coverage)


def minimized(target: Target, case: Case, finding: Finding,
              properties: dict[str, Property]) -> Case:
    def still_fails(candidate: Case) -> bool:
        again = check(target, candidate, target.run(candidate), properties,
                      repeat=finding.kind == "not deterministic")
        return again is not None and again.kind == finding.kind

    return Minimizer(still_fails).minimize(case)


def replay(target: Target, case: Case, properties: dict[str, Property]) -> Finding | None:
    return check(target, case, target.run(case), properties, repeat=True)
