"""One micro-VM: a KVM VM with a single memory slot and a single vCPU, and no devices.

Lifecycle (a small state machine, checked on every transition):

    new ──start()──▶ READY ──run()...──▶ READY ──reset()──▶ READY ...
                       │                    │
                       └──── fault ─────────┴──▶ BROKEN ──destroy()──▶ DESTROYED

A machine's memory is a private copy-on-write mapping of a snapshot (a sealed memfd): pages
the guest never writes stay shared with the snapshot, and `reset()` drops the written ones
(or, in the plugin's working set, copies the snapshot's bytes back into them). The boot
machine that makes a snapshot maps it shared instead, so that what it writes becomes the
snapshot.
"""

from __future__ import annotations

import array
import ctypes
import enum
import errno
import os
import struct
import time
from dataclasses import dataclass

from vmm.kvm import api
from vmm.kvm.layout import (
    CODE_SELECTOR,
    DATA_SELECTOR,
    EXIT_KINDS,
    EXIT_WINDOW,
    GDT,
    PAGE,
    PML4,
    STACK_TOP,
)
from vmm.kvm.page_runs import Runs, runs_of, without

_CR0 = 0x80010033  # PE MP ET NE WP PG
_CR4 = 0x620  # PAE OSFXSR OSXMMEXCPT (SSE, no AVX: the guest never enables XSAVE)
_EFER = 0xD00  # LME LMA NXE
_TSS_ADDRESS = 0xFFFBD000  # above any slot; VMX needs it set, the guest never uses it
_PAGE_PRESENT, _PAGE_SWAPPED, _PAGE_FILE = 1 << 63, 1 << 62, 1 << 61  # pagemap entry bits
SCAN_REGIONS = 256  # runs asked of the kernel's page scan at a time
# Written runs outside the working set dropped one by one at most; past this (a guest that
# wrote every other page, say), one mapping of the whole snapshot costs the host less.
MAX_DROPPED_RUNS = 64
_EXIT_REASON = struct.Struct("<I")
_MMIO_EXIT = struct.Struct("<QI4xIB")  # address, first 4 data bytes, length, is_write
_IO_EXIT = struct.Struct("<BBH")  # direction, size, port
GUEST_CPU_FLAGS = ("sse4_1", "popcnt")  # the guest image is built for them (vmm/kvm/image.py)


class MachineState(enum.Enum):
    READY = "ready"
    BROKEN = "broken"
    DESTROYED = "destroyed"


class VmCrash(Exception):
    """The vCPU stopped for a reason the protocol does not allow (the machine is broken)."""


class VcpuTimeout(Exception):
    """The vCPU's event used up its CPU time (the machine is broken)."""


def missing_cpu_flags() -> list[str]:
    """What the guest image needs of the CPU that this one lacks. The host CPU's flags count,
    not the CPUID KVM offers guests: our guest never asks, it just runs the instructions."""
    with open("/proc/cpuinfo") as cpuinfo:
        flags = next((line.split(":", 1)[1].split() for line in cpuinfo
                      if line.startswith("flags")), [])
    return [flag for flag in GUEST_CPU_FLAGS if flag not in flags]


class Kvm:
    """The process's handle on /dev/kvm: makes VMs, knows the CPUID to give their vCPUs."""

    def __init__(self) -> None:
        self.fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
        self.run_size = api.ioctl(self.fd, api.GET_VCPU_MMAP_SIZE)
        self.cpuid = api.Cpuid(nent=api.MAX_CPUID_ENTRIES)
        api.ioctl(self.fd, api.GET_SUPPORTED_CPUID, self.cpuid)
        self._pagemap, self._pagemap_pid = -1, 0
        self.scans_pages = _scans_pages(self.pagemap)

    @property
    def pagemap(self) -> int:
        """/proc/self/pagemap, opened by this process: one opened before a fork would read
        the parent's page tables, and miss every page a VM of the child's wrote."""
        if self._pagemap_pid != os.getpid():
            if self._pagemap >= 0:
                os.close(self._pagemap)
            self._pagemap = os.open("/proc/self/pagemap", os.O_RDONLY | os.O_CLOEXEC)
            self._pagemap_pid = os.getpid()
        return self._pagemap

    def close(self) -> None:
        if self._pagemap >= 0:
            os.close(self._pagemap)
        os.close(self.fd)


def _scans_pages(pagemap: int) -> bool:
    """Whether this kernel has PAGEMAP_SCAN (Linux 6.7), asked with an empty range."""
    try:
        api.ioctl(pagemap, api.PAGEMAP_SCAN, api.PageScan(size=ctypes.sizeof(api.PageScan)))
    except OSError as exc:
        if exc.errno in (errno.ENOTTY, errno.EINVAL):
            return False
        raise
    return True


@dataclass
class CpuState:
    regs: api.Regs
    sregs: api.Sregs
    fpu: api.Fpu


class Machine:
    __slots__ = ("_kvm", "_memfd", "_run", "_run_view", "_scanned", "_snapshot", "_snapshot_view",
                 "_vcpu", "_vm", "address", "cpu_until", "memory", "size", "state", "timings")

    def __init__(self, kvm: Kvm, memfd: int, size: int, *, code: range = range(0),
                 shared: bool = False) -> None:
        """`code`: the guest addresses its page tables map read-only (vmm/kvm/layout.py), which
        the guest cannot write, so that looking for written pages skips them."""
        self._kvm = kvm
        self._memfd = memfd
        self.size = size
        self._scanned = ((0, code.start), (code.stop, size)) if code else ((0, size),)
        # The running thread's CPU clock reading past which the guest stops (set for each run
        # by vmm/kvm/watchdog.py; none is left before the first).
        self.cpu_until = 0.0
        self.state = MachineState.BROKEN  # until every resource below exists
        self.timings: dict[str, float] = {}  # seconds, per step: where making it went
        self._vm = self._vcpu = -1
        self.address = self._run = self._snapshot = 0
        clock = time.perf_counter
        t0 = clock()
        try:
            self._vm = api.ioctl(kvm.fd, api.CREATE_VM, 0)
            api.ioctl(self._vm, api.SET_TSS_ADDR, _TSS_ADDRESS)
            t1 = clock()
            self.address = api.mmap(size, api.PROT_READ | api.PROT_WRITE,
                                    (api.MAP_SHARED if shared else api.MAP_PRIVATE)
                                    | api.MAP_NORESERVE, memfd)
            api.ioctl(self._vm, api.SET_USER_MEMORY_REGION, api.MemoryRegion(
                slot=0, flags=0, guest_phys_addr=0, memory_size=size,
                userspace_addr=self.address))
            # The snapshot as it is, read-only, for `restore` to copy from.
            self._snapshot = api.mmap(size, api.PROT_READ, api.MAP_SHARED | api.MAP_NORESERVE,
                                      memfd)
            t2 = clock()
            self._vcpu = api.ioctl(self._vm, api.CREATE_VCPU, 0)
            self._run = api.mmap(kvm.run_size, api.PROT_READ | api.PROT_WRITE, api.MAP_SHARED,
                                 self._vcpu)
            api.ioctl(self._vcpu, api.SET_CPUID2, kvm.cpuid)
            t3 = clock()
        except OSError:
            self.destroy()
            raise
        self.timings = {"create VM": t1 - t0, "map memory": t2 - t1, "create vCPU": t3 - t2}
        self._run_view = memoryview((ctypes.c_char * kvm.run_size).from_address(self._run)).cast(
            "B")
        self.memory = memoryview((ctypes.c_char * size).from_address(self.address)).cast("B")
        self._snapshot_view = memoryview(
            (ctypes.c_char * size).from_address(self._snapshot)).cast("B")

    # --- CPU state --------------------------------------------------------------------------

    def boot_state(self, entry: int) -> CpuState:
        """64-bit long mode in user mode (CPL 3), flat segments, paging from the tables at
        PML4, at the image's `entry`."""
        sregs = api.Sregs()
        api.ioctl(self._vcpu, api.GET_SREGS, sregs)
        code = api.Segment(base=0, limit=0xFFFFFFFF, selector=CODE_SELECTOR, type=11, present=1,
                           dpl=3, db=0, s=1, l=1, g=1)
        data = api.Segment(base=0, limit=0xFFFFFFFF, selector=DATA_SELECTOR, type=3, present=1,
                           dpl=3, db=1, s=1, l=0, g=1)
        sregs.cs = code
        sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data
        sregs.tr = api.Segment(base=0, limit=0x67, selector=0, type=11, present=1, s=0)
        sregs.gdt.base, sregs.gdt.limit = GDT, 3 * 8 - 1
        sregs.idt.base, sregs.idt.limit = 0, 0  # no handlers: any exception ends the VM
        sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer = _CR0, PML4, _CR4, _EFER
        regs = api.Regs(rip=entry, rsp=STACK_TOP - 8, rflags=2)
        fpu = api.Fpu(fcw=0x37F, mxcsr=0x1F80)
        return CpuState(regs, sregs, fpu)

    def load_state(self, state: CpuState, *, sregs: bool = True) -> None:
        start = time.perf_counter()
        if sregs:
            api.ioctl(self._vcpu, api.SET_SREGS, state.sregs)
        api.ioctl(self._vcpu, api.SET_REGS, state.regs)
        api.ioctl(self._vcpu, api.SET_FPU, state.fpu)
        self.state = MachineState.READY
        self.timings["registers"] = time.perf_counter() - start

    def save_state(self) -> CpuState:
        """The vCPU's state, with the exit it stopped at completed (see `complete_exit`)."""
        self.complete_exit()
        state = CpuState(api.Regs(), api.Sregs(), api.Fpu())
        api.ioctl(self._vcpu, api.GET_REGS, state.regs)
        api.ioctl(self._vcpu, api.GET_SREGS, state.sregs)
        api.ioctl(self._vcpu, api.GET_FPU, state.fpu)
        return state

    def complete_exit(self) -> None:
        """Finish the instruction the vCPU exited on (KVM completes an `out` on the next
        KVM_RUN) without running anything else: KVM's documented way to make the state it
        reports consistent."""
        self._run_view[api.RUN_IMMEDIATE_EXIT] = 1
        try:
            api.ioctl(self._vcpu, api.RUN)
        except OSError as exc:
            if exc.errno != errno.EINTR:
                raise
        finally:
            self._run_view[api.RUN_IMMEDIATE_EXIT] = 0

    # --- running ----------------------------------------------------------------------------

    def run(self) -> tuple[int, int]:
        """Run until the guest writes a 32-bit value to its exit window: (exit kind, value).
        Raise VcpuTimeout once this thread's CPU clock passes `cpu_until`, VmCrash on any other
        exit; both break the machine."""
        if self.state is not MachineState.READY:
            raise VmCrash(f"the machine is {self.state.value}")
        run = self._run_view
        while True:
            # Before every entry: after the exit the host just served (a loop over host calls
            # stops here) as after a kick.
            if time.thread_time() >= self.cpu_until:
                self.state = MachineState.BROKEN
                raise VcpuTimeout
            if api.ioctl_nocheck(self._vcpu, api.RUN) < 0:
                code = ctypes.get_errno()
                if code == errno.EINTR:  # a kick from the watchdog, or another signal
                    continue
                self.state = MachineState.BROKEN
                raise VmCrash(f"KVM_RUN failed: {os.strerror(code)}")
            reason = _EXIT_REASON.unpack_from(run, api.RUN_EXIT_REASON)[0]
            if reason == api.EXIT_MMIO:
                address, value, length, is_write = _MMIO_EXIT.unpack_from(run, api.RUN_EXIT_DATA)
                offset = address - EXIT_WINDOW
                if is_write and length == 4 and 0 <= offset < 8 * EXIT_KINDS and not offset % 8:
                    return offset >> 3, value
            self.state = MachineState.BROKEN
            raise VmCrash(self._describe(reason))

    def _describe(self, reason: int) -> str:
        what = api.EXIT_NAMES.get(reason, f"exit reason {reason}")
        if reason == api.EXIT_MMIO:
            address, _, length, is_write = _MMIO_EXIT.unpack_from(self._run_view,
                                                                 api.RUN_EXIT_DATA)
            access = "write to" if is_write else "read from"
            return f"{what}: a {length}-byte {access} {address:#x}, neither its memory nor an exit"
        if reason == api.EXIT_IO:
            direction, size, port = _IO_EXIT.unpack_from(self._run_view, api.RUN_EXIT_DATA)
            return f"{what}: {'out' if direction == api.IO_OUT else 'in'} of {size} bytes on " \
                   f"port {port:#x}"
        if reason in (api.EXIT_FAIL_ENTRY, api.EXIT_INTERNAL_ERROR):
            detail = struct.unpack_from("<Q", self._run_view, api.RUN_EXIT_DATA)[0]
            return f"{what} ({detail:#x})"
        return what

    # --- reuse and teardown -----------------------------------------------------------------

    def reset(self, state: CpuState, kept: Runs) -> None:
        """Back to the snapshot, its registers and FPU state loaded. Memory: the `kept` runs
        (the plugin's working set) are given the snapshot's bytes in place, so that they keep
        their pages and KVM its mappings of them, and the next guest touches them without a
        fault; every other page the last guest wrote is dropped (read from the snapshot
        again). Where the kernel cannot scan for those pages, or they are too scattered, the
        snapshot is mapped again over all of the memory instead.
        The segment and control registers are not reloaded: neither the runtime nor wasm2c's
        code can change them, and a machine that faulted is destroyed, never reset."""
        if self.state is not MachineState.READY:
            raise VmCrash(f"cannot reset a {self.state.value} machine")
        start = time.perf_counter()
        self.complete_exit()
        dropped = without(self.written_runs(), kept) if self._kvm.scans_pages else None
        if dropped is None or len(dropped) > MAX_DROPPED_RUNS:
            api.mmap(self.size, api.PROT_READ | api.PROT_WRITE,
                     api.MAP_PRIVATE | api.MAP_FIXED | api.MAP_NORESERVE, self._memfd,
                     self.address)
        else:
            for first, count in dropped:
                api.madvise(self.address + first * PAGE, count * PAGE, api.MADV_DONTNEED)
        self.timings["reset memory"] = time.perf_counter() - start
        self.restore(kept)
        self.load_state(state, sregs=False)

    def restore(self, runs: Runs) -> None:
        """Give these runs the snapshot's bytes, copied into private pages of the guest's now,
        in the host, where a page fault is cheap; in the guest each first write is a fault
        the hypervisor handles (on a shadow-paging KVM, at several times the cost). Giving it
        pages it only reads ahead of time was measured to buy nothing."""
        start = time.perf_counter()
        memory, snapshot = self.memory, self._snapshot_view
        for first, count in runs:
            pages = slice(first * PAGE, (first + count) * PAGE)
            memory[pages] = snapshot[pages]
        self.timings["restore"] = time.perf_counter() - start

    def written_runs(self) -> Runs:
        """The guest pages that have a private copy (written since the last reset by guest or
        host, or restored), swapped out or not; but for its code's."""
        if not self._kvm.scans_pages:
            return runs_of(self._pagemap_entries())
        runs: Runs = []
        regions = (api.PageRegion * SCAN_REGIONS)()
        for first, last in self._scanned:
            runs += self._scan(self.address + first, self.address + last, regions)
        return runs

    def _scan(self, start: int, end: int, regions: ctypes.Array[api.PageRegion]) -> Runs:
        runs: Runs = []
        while start < end:
            # Pages not of the file (the snapshot), present or swapped.
            scan = api.PageScan(
                size=ctypes.sizeof(api.PageScan), start=start, end=end,
                vec=ctypes.addressof(regions), vec_len=SCAN_REGIONS,
                category_inverted=api.PAGE_IS_FILE, category_mask=api.PAGE_IS_FILE,
                category_anyof_mask=api.PAGE_IS_PRESENT | api.PAGE_IS_SWAPPED)
            found = api.ioctl(self._kvm.pagemap, api.PAGEMAP_SCAN, scan)
            runs += [((region.start - self.address) // PAGE, (region.end - region.start) // PAGE)
                     for region in regions[:found]]
            if scan.walk_end <= start:
                raise VmCrash("the kernel's page scan made no progress")
            start = scan.walk_end
        return runs

    def _pagemap_entries(self) -> set[int]:
        """written_runs' pages from /proc/self/pagemap's entries, where the kernel has no scan:
        about ten times as slow."""
        entries = array.array("Q")
        entries.frombytes(os.pread(self._kvm.pagemap, self.size // PAGE * 8,
                                   self.address // PAGE * 8))
        return {page for page, entry in enumerate(entries)
                if entry & (_PAGE_PRESENT | _PAGE_SWAPPED) and not entry & _PAGE_FILE}

    def destroy(self) -> None:
        if self.state is MachineState.DESTROYED:
            return
        self.state = MachineState.DESTROYED
        self.memory = self._run_view = self._snapshot_view = None  # type: ignore[assignment]
        if self._run:
            api.munmap(self._run, self._kvm.run_size)
        if self._vcpu >= 0:
            os.close(self._vcpu)
        if self._vm >= 0:
            os.close(self._vm)  # the kernel frees the VM once its last fd is gone
        if self.address:
            api.munmap(self.address, self.size)
        if self._snapshot:
            api.munmap(self._snapshot, self.size)
