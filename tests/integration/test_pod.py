"""`make pod` for real: network namespaces, the real Envoy, the sidecar's two workers, a real
Redis and the HTTP application. A short scenario must show every verdict it promises, reach
nothing but Envoy's listeners from the client namespace, and leave no namespace or process
behind, also when interrupted. Without root it refuses, saying why."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from sidecar.pod.netns import unavailable
from tests.conftest import ROOT

pytestmark = pytest.mark.integration
HYPERFILTER = str(ROOT / ".venv" / "bin" / "hyperfilter")
SCENARIO_SECONDS = 12
# The first pod on a machine compiles its plugins for both tiers; later ones take seconds.
RUN_SECONDS = 240


@pytest.fixture(scope="module")
def can_make_a_pod() -> None:
    reason = unavailable()
    if reason is not None:
        pytest.skip(f"no pod here: {reason}")


def namespaces(output: str) -> list[str]:
    """The namespaces a run said it made."""
    found = re.search(r"network: (hf-pod-\w+) .* (hf-client-\w+) ", output)
    assert found, output
    return [found.group(1), found.group(2)]


def assert_torn_down(output: str, logs: Path) -> None:
    """No namespace of the run left, and none of its processes (the sidecar's workers
    included) alive."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                            check=True).stdout
    for name in namespaces(output):
        assert name not in listed
    pids = [int(pid) for pid in re.findall(r"\(pid (\d+)\)", (logs / "sidecar.log").read_text())]
    assert pids, "the sidecar logged no workers"
    for pid in pids:
        try:
            alive = b"hyperfilter" in Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            alive = False
        assert not alive, f"worker {pid} is still running"


def test_make_pod_shows_every_verdict_and_tears_down(can_make_a_pod: None,
                                                     tmp_path: Path) -> None:
    run = subprocess.run(
        ["make", "--no-print-directory", "pod",
         f"POD_ARGS=--seconds {SCENARIO_SECONDS} --out {tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=RUN_SECONDS, check=False)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-6000:]
    result: dict[str, Any] = json.loads((tmp_path / "summary.json").read_text())
    checks = result["checks"]
    failed = {key: check["detail"] for key, check in checks.items() if not check["ok"]}
    assert not failed
    assert set(checks) >= {"reachability", "redis-passes", "firewall-refuses", "auth-401",
                           "rate-limit-429", "reload", "traffic-flows", "hostile-contained"}
    # the sidecar's own counts, scraped from both workers' metrics
    sidecar = result["sidecar"]
    verdicts, faults = sidecar["verdicts"], sidecar["faults"]
    # FLUSHALL, CONFIG, inline, split: each answered -ERR, then closed
    assert verdicts["redis-firewall"]["answer-and-close"] >= 4
    assert verdicts["redis-firewall"]["forward"] > 100
    assert verdicts["http-auth"]["respond"] == 2  # no key, a wrong key
    assert verdicts["http-rate-limit"]["respond"] == result["rate_limit"]["limited"] > 0
    assert result["rate_limit"]["passed"] == 40  # one count across both workers
    assert sum(faults["hostile"].values()) >= sum(result["attacks"].values()) >= 6
    assert {"CpuLimitExceeded", "PluginTrap", "MemoryLimitExceeded"} <= set(faults["hostile"])
    assert result["contained"] == sum(result["attacks"].values())
    assert result["worker_restarts"] == 0
    assert sidecar["connections"] > 10 and sidecar["requests"] > 100
    assert sidecar["sandboxes"] > sidecar["connections"] + sidecar["requests"]
    for kind in ("redis", "http"):
        assert result["client"][kind]["ok"] > 0 and result["client"][kind]["failed"] == 0
        assert 0 < result["client"][kind]["latency"]["p50_ms"] <= result["client"][kind][
            "latency"]["p99_ms"]
    assert (tmp_path / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "torn down" in output
    assert_torn_down(output, tmp_path / "logs")


def test_an_interrupted_pod_is_torn_down(can_make_a_pod: None, tmp_path: Path) -> None:
    with (tmp_path / "out.txt").open("w+") as out:
        pod = subprocess.Popen([HYPERFILTER, "pod", "--seconds", "60", "--out", str(tmp_path)],
                               stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            deadline = time.monotonic() + RUN_SECONDS
            while "scenario:" not in (tmp_path / "out.txt").read_text():
                assert pod.poll() is None and time.monotonic() < deadline, (
                    tmp_path / "out.txt").read_text()
                time.sleep(0.2)
            time.sleep(2)  # into the scenario: traffic flowing
            pod.send_signal(signal.SIGINT)
            assert pod.wait(timeout=60) == 130
        finally:
            if pod.poll() is None:
                pod.kill()
                pod.wait()
    output = (tmp_path / "out.txt").read_text()
    assert "interrupted" in output and "torn down" in output
    assert_torn_down(output, tmp_path / "logs")


def test_without_root_it_says_so(tmp_path: Path) -> None:
    command = [HYPERFILTER, "pod", "--out", str(tmp_path / "out")]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("no setpriv to run the pod as another user")
        command = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    run = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 1
    assert "needs root" in run.stdout
    assert not (tmp_path / "out").exists()
