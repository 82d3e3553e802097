"""Page runs: the sets of guest pages the kvm tier's memory calls work on."""

from __future__ import annotations

import random

from vmm.kvm.page_runs import pages_of, runs_of, without


def test_runs_are_the_pages_sorted_and_joined() -> None:
    assert runs_of({7, 1, 2, 3, 9, 8}) == [(1, 3), (7, 3)]
    assert runs_of([]) == []
    assert pages_of([(1, 3), (7, 3)]) == {1, 2, 3, 7, 8, 9}


def test_without_is_the_set_difference() -> None:
    chance = random.Random(13)
    for _ in range(500):
        pages = {page for page in range(64) if chance.random() < 0.5}
        removed = {page for page in range(64) if chance.random() < 0.3}
        assert without(runs_of(pages), runs_of(removed)) == runs_of(pages - removed)


def test_without_splits_a_run_around_holes_inside_it() -> None:
    assert without([(0, 10)], [(2, 1), (5, 2)]) == [(0, 2), (3, 2), (7, 3)]
    assert without([(0, 10)], [(0, 10)]) == []
    assert without([(4, 2)], [(0, 3), (8, 1)]) == [(4, 2)]
