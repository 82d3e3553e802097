"""Sets of guest pages as sorted runs of (first page, count): what the host's memory calls take
(one madvise or read per run), and what the kernel's page scan returns."""

from __future__ import annotations

from collections.abc import Iterable

Runs = list[tuple[int, int]]


def runs_of(pages: Iterable[int]) -> Runs:
    runs: Runs = []
    for page in sorted(pages):
        if runs and runs[-1][0] + runs[-1][1] == page:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((page, 1))
    return runs


def pages_of(runs: Runs) -> set[int]:
    return {page for first, count in runs for page in range(first, first + count)}


def without(runs: Runs, removed: Runs) -> Runs:
    """The pages of `runs` that are not in `removed`, as runs; both sorted, neither
    overlapping itself."""
    left: Runs = []
    holes = iter(removed)
    hole = next(holes, None)
    for first, count in runs:
        end = first + count
        while first < end:
            while hole is not None and hole[0] + hole[1] <= first:
                hole = next(holes, None)
            if hole is None or hole[0] >= end:
                left.append((first, end - first))
                break
            if hole[0] > first:
                left.append((first, hole[0] - first))
            first = hole[0] + hole[1]
    return left
