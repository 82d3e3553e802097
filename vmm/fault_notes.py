"""An SDK's report of the plugin's error, on WASI stderr: a fault note (the cause, one line),
then the traceback, then it exits or traps (plugins/sdk/python/hyperfilter_errors.py). The
note becomes the fault's message, and note and traceback one message in the plugin's log (at
its rate: one token), on every tier that runs components."""

from __future__ import annotations

from vmm.capabilities import PluginLog
from vmm.capabilities.log import OutputLines
from vmm.errors import CpuLimitExceeded, PluginError, SandboxFault

# This, the cause and a newline in one write.
FAULT_NOTE = b"hyperfilter-fault: "
MAX_NOTE = 512
MAX_REPORT = 16 << 10  # bytes of the traceback kept
LOG_WARN, LOG_ERROR = 2, 3


class PluginStderr:
    """A sandbox's WASI stderr: lines into the plugin's log, except an SDK's report of the
    plugin's error: a fault note, then what else it writes until it stops (the traceback).
    Both are kept for the fault, bounded, and the note made one printable line: it is logged
    as the fault's cause."""

    def __init__(self, log: PluginLog) -> None:
        self._log = log
        self._lines = OutputLines(log, LOG_WARN)
        self.note: str | None = None
        self._report = b""

    def begin_event(self) -> None:
        self.note, self._report = None, b""

    def write(self, data: bytes) -> None:
        if self.note is not None:
            self._report += data[:MAX_REPORT - len(self._report)]
        elif data.startswith(FAULT_NOTE):
            note, _, self._report = data[len(FAULT_NOTE):MAX_REPORT].partition(b"\n")
            text = note.decode("utf-8", "replace").strip()[:MAX_NOTE]
            self.note = text if text.isprintable() else text.encode("unicode_escape").decode()
        else:
            self._lines.write(data)

    @property
    def report(self) -> list[str]:
        """The lines the SDK wrote after its note."""
        return self._report.decode("utf-8", "replace").splitlines()

    def explained(self, plugin: str, fault: SandboxFault) -> SandboxFault:
        """The fault an event ended in, as the SDK's note tells it (logged with the report)
        when there is one. The note is written first, so that a report the CPU bound cut
        short has still said why: in a nested KVM, where each page a fresh VM first touches
        is a VM exit, formatting a Python traceback took 40-50 ms of CPU."""
        if self.note is None:
            return fault
        report = self.report
        if isinstance(fault, CpuLimitExceeded):
            report = [*report, f"(the report was cut short: {fault.detail})"]
        self._log.log(LOG_ERROR, self.note, *report)
        return PluginError(plugin, self.note)
