"""`hyperfilter plugin test DIR`: the plugin's test file (sidecar/plugin/expectations.py) run
in the plugin's real sandbox, through the sidecar's own session code, without Envoy: the
fuzzer's target (sidecar/fuzz/target.py) plays each case as one stream in fresh sandboxes.
One line per case; exit 0 when every case passes, 1 when one fails, 2 when the test file or
the plugin cannot be loaded."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from sidecar.config import TIERS, ConfigError
from sidecar.fuzz.cases import Case
from sidecar.fuzz.target import Outcome, Target
from sidecar.http_session import HttpResult
from sidecar.plugin.expectations import (
    CaseFile,
    CaseFileError,
    Expectation,
    ScriptedCase,
    describe,
    describe_expected,
    load_cases,
    matches,
)
from sidecar.streams import Decision
from sidecar.tcp_session import ConnectionAction, TcpResult
from vmm.errors import PluginLoadError, SandboxFault, TierMismatchError
from vmm.events import FORWARD, HTTP_FORWARD, EventKind, Verdict
from vmm.kvm import backend as kvm

OPEN_EVENTS = frozenset({EventKind.TCP_OPEN, EventKind.HTTP_OPEN})


@dataclass(frozen=True)
class Got:
    """What became of one event: the plugin's verdict or fault, or (not delivered to it)
    `forward` with `note` saying why, or None when the stream had stopped."""

    verdict: Verdict | None
    fault: SandboxFault | None = None
    note: str = ""

    def __str__(self) -> str:
        if self.fault is not None:
            return f"fault ({self.fault})"
        shown = describe(self.verdict) if self.verdict is not None else "nothing"
        return f"{shown} ({self.note})" if self.note else shown


def _decided(decision: Decision) -> Got:
    return Got(decision.verdict, decision.fault)


def _compare(what: str, expected: Expectation, got: Got) -> str | None:
    if matches(expected, got.verdict, got.fault is not None):
        return None
    return f"{what}: expected {describe_expected(expected)}, got {got}"


def _stopped(answer: TcpResult | HttpResult) -> str | None:
    """How the stream stopped at this answer, if it did."""
    if isinstance(answer, TcpResult):
        return None if answer.action is ConnectionAction.CONTINUE else answer.action.value
    return None if answer.respond is None else f"respond {answer.respond.status}"


def first_mismatch(case: ScriptedCase, outcome: Outcome) -> str | None:
    """The first event whose outcome is not what the case expects, said as "event N:
    expected ..., got ..."; None when every one is."""
    if outcome.error is not None:
        return f"the sidecar raised: {outcome.error.strip().splitlines()[-1]}"
    forward = FORWARD if case.protocol == "tcp" else HTTP_FORWARD
    opens = [d for d in outcome.decisions if d.event in OPEN_EVENTS]
    if case.expect_open is not None:
        got = _decided(opens[0]) if opens else Got(forward, note="on-open not delivered: "
                                                   "the manifest does not want it")
        if (problem := _compare("on-open", case.expect_open, got)) is not None:
            return problem
    # Where a fault dropped the plugin from the stream (fail-open), if one did.
    dropped_at = "on-open" if any(d.fault for d in opens) else None
    start = 0
    for index, expected in enumerate(case.expects):
        number = index + 1
        if index >= len(outcome.answers):
            last = _stopped(outcome.answers[-1]) if outcome.answers else None
            got = Got(None, note=f"the stream stopped at event {len(outcome.answers)}"
                                 f"{f' ({last})' if last else ''}")
        else:
            decisions = [d for d in outcome.decisions[start:outcome.ends[index]]
                         if d.event not in OPEN_EVENTS]
            start = outcome.ends[index]
            got = _got(decisions, outcome.answers[index], forward, dropped_at, opens)
            if got.fault is not None and dropped_at is None:
                dropped_at = f"event {number}"
        if expected is not None and (problem := _compare(f"event {number}", expected,
                                                         got)) is not None:
            return problem
    return None


def _got(decisions: list[Decision], answer: TcpResult | HttpResult, forward: Verdict,
         dropped_at: str | None, opens: list[Decision]) -> Got:
    """What became of an event: the plugin's decision, else why it had none."""
    if decisions:
        return _decided(decisions[0])
    stopped = _stopped(answer)
    if stopped is not None:
        if opens:  # the one plugin decided at on-open, then the stream stopped
            return Got(None, note=f"the stream stopped at on-open: {_decided(opens[-1])}")
        return Got(None, note=f"the stream stopped ({stopped}) before the plugin saw the event")
    if dropped_at is not None:
        return Got(forward, note=f"not delivered: the plugin was dropped after its fault at "
                                 f"{dropped_at} (fail-open)")
    return Got(forward, note="not delivered: the manifest does not want this event")


def run_case(target: Target, case: ScriptedCase) -> str | None:
    """The first mismatch of the case's runs (each a fresh stream), or None."""
    stream = Case(case.protocol, case.events)
    for run in range(case.repeat):
        problem = first_mismatch(case, target.run(stream, case.info))
        if problem is not None:
            return problem if case.repeat == 1 else f"run {run + 1} of {case.repeat}: {problem}"
    return None


def tier_refusal(tier: str) -> str | None:
    """Why `tier` cannot run here, or None."""
    if tier == "kvm":
        reason = kvm.unavailable()
        return None if reason is None else f"the kvm tier cannot run here: {reason}"
    return None


def main(directory: Path, tier: str, out: Console, err: Console) -> int:
    if tier not in TIERS:
        err.print(f"[bold red]error:[/] --tier: {escape(tier)!r} is not one of "
                  f"{', '.join(TIERS)}")
        return 2
    try:
        tests = load_cases(directory)
    except CaseFileError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        return 2
    refusal = tier_refusal(tier)
    if refusal is not None:
        out.print(f"skipped on {tier}: {escape(refusal)}")
        return 0
    try:
        with err.status(f"loading {directory} on {tier} (a first load compiles it)"):
            target = Target(directory, tier, config=tests.config)
    except TierMismatchError as exc:
        out.print(f"skipped on {tier}: {escape(exc.problem)}")
        return 0
    except (PluginLoadError, ConfigError) as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        return 2
    try:
        return _report(target, tests, tier, out)
    finally:
        target.close()


def _report(target: Target, tests: CaseFile, tier: str, out: Console) -> int:
    count = len(tests.cases)
    out.print(f"{target.plugin.name} ({target.plugin.kind} on {tier}): {count} "
              f"case{'s' if count != 1 else ''} from {tests.path}", soft_wrap=True,
              highlight=False)
    failed = 0
    for case in tests.cases:
        problem = run_case(target, case)
        if problem is None:
            out.print(f"[green]pass[/] {escape(case.name)}", highlight=False)
        else:
            failed += 1
            where = f" (line {case.line})" if case.line else ""
            out.print(f"[bold red]FAIL[/] {escape(case.name)}{where}: {escape(problem)}",
                      soft_wrap=True, highlight=False)
    passed = len(tests.cases) - failed
    out.print(f"{passed} passed, {failed} failed", highlight=False)
    return 1 if failed else 0
