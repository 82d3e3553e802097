"""`hyperfilter fuzz` as a user runs it, on the real sandbox: it finds what a plugin does
wrong on some input (a memory hog, a trap, a loop in tests/plugins/faulty; a card number a
redactor misses when it is split), minimizes the stream to what triggers it, saves it, and
replays it by the command it prints; a property file's predicate that a plugin breaks is a
finding too; a sound plugin's budget ends with nothing found; and what it cannot load fails
with exit 2."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from sidecar.fuzz import cases
from tests.conftest import TIERS, plugin_dir, skip_unless_tier_runs
from tests.integration.test_cli import HYPERFILTER
from tests.unit.test_component_coverage import component_of, copy_with

pytestmark = pytest.mark.integration
FAULTS = ("trap", "loop", "hog", "oob", "badptr")  # what faulty misbehaves on


def fuzz(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(HYPERFILTER), "fuzz", *args], capture_output=True, text=True,
                          timeout=300, check=False)


@pytest.mark.parametrize("tier", TIERS)
def test_it_finds_minimizes_saves_and_replays_a_fault(tier: str, tmp_path: Path) -> None:
    skip_unless_tier_runs(tier)
    found = fuzz(str(plugin_dir("faulty")), "--tier", tier, "--time", "120s", "--seed", "3",
                 "--corpus", str(tmp_path))
    assert found.returncode == 1, found.stdout + found.stderr
    [finding] = tmp_path.glob("finding-*.json")
    case = cases.load(finding)
    triggers = [word for word in FAULTS
                if any(word.encode() in (getattr(e, "data", b"") or b"") for e in case.events)
                or any(word.encode() in value for e in case.events
                       for _, value in getattr(e, "headers", ()))]
    assert triggers, f"the minimized case holds no trigger: {case}"
    assert case.size() <= 2 * len(case.events) + 16  # minimized to the trigger, near enough
    assert "replay: hyperfilter fuzz" in found.stdout
    again = fuzz(str(plugin_dir("faulty")), "--tier", tier, "--replay", str(finding))
    assert again.returncode == 1
    assert json.loads(finding.read_text())["finding"].split(":")[0] in again.stdout


def test_a_broken_property_is_a_finding(tmp_path: Path) -> None:
    """pass-through lets a Redis FLUSHALL through; the property says nothing may."""
    rules = tmp_path / "rules.py"
    rules.write_text(
        "def property_blocked_words_never_pass(case, outcome):\n"
        "    return not any(b'FLUSHALL' in getattr(a, 'data', b'') for a in outcome.answers)\n")
    found = fuzz(str(plugin_dir("pass-through")), "--time", "60s", "--seed", "5",
                 "--property", str(rules), "--corpus", str(tmp_path))
    assert found.returncode == 1, found.stdout
    assert "property blocked_words_never_pass does not hold" in found.stdout.replace("\n", " ")
    assert "--property" in found.stdout


CARD_PROPERTY = """
CARD = b"4111 1111 1111 1111"


def property_no_card_reaches_upstream_unmasked(case, outcome):
    upstream = b"".join(answer.data for event, answer in zip(case.events, outcome.answers)
                        if event.direction == 0)
    return CARD not in upstream
"""


@pytest.mark.parametrize("tier", TIERS)
def test_a_redactor_that_misses_a_split_card_number_is_caught(tier: str, tmp_path: Path) -> None:
    """tests/plugins/leaky-redactor masks a card number only within one segment; the fuzzer
    finds the split it misses, minimizes it to the number in two pieces, and the command it
    prints replays the finding."""
    skip_unless_tier_runs(tier)
    rules = tmp_path / "cards.py"
    rules.write_text(CARD_PROPERTY)
    found = fuzz(str(plugin_dir("leaky-redactor")), "--tier", tier, "--time", "120s",
                 "--seed", "1", "--property", str(rules), "--corpus", str(tmp_path))
    assert found.returncode == 1, found.stdout
    [finding] = tmp_path.glob("finding-*.json")
    pieces = [getattr(event, "data", b"") for event in cases.load(finding).events]
    assert len(pieces) == 2 and b"".join(pieces) == b"4111 1111 1111 1111"
    [command] = [line.removeprefix("replay: ") for line in found.stdout.splitlines()
                 if line.startswith("replay: ")]
    program, *args = shlex.split(command)
    assert program == "hyperfilter"
    replayed = subprocess.run([str(HYPERFILTER), *args], capture_output=True, text=True,
                              timeout=120, check=False)
    assert replayed.returncode == 1
    assert "property no_card_reaches_upstream_unmasked does not hold" in \
        replayed.stdout.replace("\n", " ")


@pytest.mark.parametrize("tier", TIERS)
def test_a_sound_plugin_runs_its_budget_out_guided_by_coverage(tier: str,
                                                                tmp_path: Path) -> None:
    skip_unless_tier_runs(tier)
    run = fuzz(str(plugin_dir("tcp-blocker")), "--tier", tier, "--events", "3000", "--time",
               "60s", "--seed", "1", "--corpus", str(tmp_path))
    assert run.returncode == 0, run.stdout
    assert "nothing found" in run.stdout
    reached = re.search(r"coverage (\d+)/(\d+) sites", run.stdout)
    assert reached is not None and 0 < int(reached.group(1)) <= int(reached.group(2))
    grown = list(tmp_path.glob("case-*.json"))  # the corpus it grew: each reached more
    assert grown
    again = fuzz(str(plugin_dir("tcp-blocker")), "--tier", tier, "--events", "300", "--seed",
                 "2", "--corpus", str(tmp_path))  # starts from that corpus
    assert again.returncode == 0
    assert len(list(tmp_path.glob("case-*.json"))) >= len(grown)


def test_a_component_is_guided_by_its_core_modules_counters(tmp_path: Path) -> None:
    """tcp-blocker's C module made a component by wit-component: its core modules are
    instrumented where they sit, the counters read through the exports that adds."""
    directory = copy_with(tmp_path, "tcp-blocker", component_of("tcp-blocker"))
    run = fuzz(str(directory), "--events", "2000", "--time", "60s", "--seed", "1", "--corpus",
               str(tmp_path / "corpus"))
    assert run.returncode == 0, run.stdout
    reached = re.search(r"(\d[\d,]*) coverage counters", run.stdout)
    assert reached is not None, run.stdout
    sites = re.search(r"coverage (\d+)/(\d+) sites", run.stdout)
    assert sites is not None and 0 < int(sites.group(1)) < int(sites.group(2)) == int(
        reached.group(1).replace(",", ""))
    assert list((tmp_path / "corpus").glob("case-*.json"))


@pytest.mark.heavy
@pytest.mark.parametrize("name", ["jwt-auth", "pii-redactor"])
def test_python_and_javascript_plugins_are_guided_by_their_interpreters_counters(
        name: str, tmp_path: Path) -> None:
    run = fuzz(str(plugin_dir(name)), "--events", "300", "--time", "120s", "--seed", "1",
               "--corpus", str(tmp_path))
    assert run.returncode == 0, run.stdout
    sites = re.search(r"coverage (\d+)/(\d+) sites", run.stdout)
    assert sites is not None and int(sites.group(1)) > 1000
    assert list(tmp_path.glob("case-*.json"))


@pytest.mark.parametrize(("args", "message"), [
    (["--time", "soon"], "expected a duration"),
    (["--property", "/nonexistent/rules.py"], "rules.py"),
    (["--replay", "/nonexistent/case.json"], "not a fuzz case"),
])
def test_what_it_cannot_load_exits_2(args: list[str], message: str) -> None:
    run = fuzz(str(plugin_dir("pass-through")), *args)
    assert run.returncode == 2
    assert message in run.stdout.replace("\n", " ")
