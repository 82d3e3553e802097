"""The Linux KVM API as far as hyperfilter uses it: ioctl numbers, the structures they take
(linux/kvm.h, x86-64), and the calls, with ctypes and no other dependency."""

from __future__ import annotations

import ctypes
import os
from ctypes import c_int, c_long, c_size_t, c_uint8, c_uint16, c_uint32, c_uint64, c_ulong, c_void_p

_libc = ctypes.CDLL(None, use_errno=True)
_ioctl = _libc.ioctl
_ioctl.argtypes = [c_int, c_ulong, c_void_p]
_ioctl.restype = c_int
_mmap = _libc.mmap
_mmap.argtypes = [c_void_p, c_size_t, c_int, c_int, c_int, c_long]
_mmap.restype = c_void_p
_munmap = _libc.munmap
_munmap.argtypes = [c_void_p, c_size_t]
_munmap.restype = c_int
_madvise = _libc.madvise
_madvise.argtypes = [c_void_p, c_size_t, c_int]
_madvise.restype = c_int

KVMIO = 0xAE


def _io(nr: int) -> int:
    return (KVMIO << 8) | nr


def _iow(nr: int, size: int) -> int:
    return (1 << 30) | (size << 16) | (KVMIO << 8) | nr


def _ior(nr: int, size: int) -> int:
    return (2 << 30) | (size << 16) | (KVMIO << 8) | nr


def _iowr(nr: int, size: int) -> int:
    return (3 << 30) | (size << 16) | (KVMIO << 8) | nr


class Regs(ctypes.Structure):
    _fields_ = [(name, c_uint64) for name in (
        "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10", "r11",
        "r12", "r13", "r14", "r15", "rip", "rflags")]


class Segment(ctypes.Structure):
    _fields_ = [("base", c_uint64), ("limit", c_uint32), ("selector", c_uint16),
                ("type", c_uint8), ("present", c_uint8), ("dpl", c_uint8), ("db", c_uint8),
                ("s", c_uint8), ("l", c_uint8), ("g", c_uint8), ("avl", c_uint8),
                ("unusable", c_uint8), ("padding", c_uint8)]


class DTable(ctypes.Structure):
    _fields_ = [("base", c_uint64), ("limit", c_uint16), ("padding", c_uint16 * 3)]


class Sregs(ctypes.Structure):
    _fields_ = [("cs", Segment), ("ds", Segment), ("es", Segment), ("fs", Segment),
                ("gs", Segment), ("ss", Segment), ("tr", Segment), ("ldt", Segment),
                ("gdt", DTable), ("idt", DTable), ("cr0", c_uint64), ("cr2", c_uint64),
                ("cr3", c_uint64), ("cr4", c_uint64), ("cr8", c_uint64), ("efer", c_uint64),
                ("apic_base", c_uint64), ("interrupt_bitmap", c_uint64 * 4)]


class Fpu(ctypes.Structure):
    _fields_ = [("fpr", c_uint8 * 128), ("fcw", c_uint16), ("fsw", c_uint16),
                ("ftwx", c_uint8), ("pad1", c_uint8), ("last_opcode", c_uint16),
                ("last_ip", c_uint64), ("last_dp", c_uint64), ("xmm", c_uint8 * 256),
                ("mxcsr", c_uint32), ("pad2", c_uint32)]


class MemoryRegion(ctypes.Structure):
    _fields_ = [("slot", c_uint32), ("flags", c_uint32), ("guest_phys_addr", c_uint64),
                ("memory_size", c_uint64), ("userspace_addr", c_uint64)]


class CpuidEntry(ctypes.Structure):
    _fields_ = [("function", c_uint32), ("index", c_uint32), ("flags", c_uint32),
                ("eax", c_uint32), ("ebx", c_uint32), ("ecx", c_uint32), ("edx", c_uint32),
                ("padding", c_uint32 * 3)]


MAX_CPUID_ENTRIES = 256


class Cpuid(ctypes.Structure):
    _fields_ = [("nent", c_uint32), ("padding", c_uint32),
                ("entries", CpuidEntry * MAX_CPUID_ENTRIES)]


assert ctypes.sizeof(Regs) == 144 and ctypes.sizeof(Sregs) == 312 and ctypes.sizeof(Fpu) == 416

GET_API_VERSION = _io(0x00)
CREATE_VM = _io(0x01)
GET_VCPU_MMAP_SIZE = _io(0x04)
GET_SUPPORTED_CPUID = _iowr(0x05, 8)
CREATE_VCPU = _io(0x41)
SET_USER_MEMORY_REGION = _iow(0x46, ctypes.sizeof(MemoryRegion))
SET_TSS_ADDR = _io(0x47)
RUN = _io(0x80)
GET_REGS = _ior(0x81, ctypes.sizeof(Regs))
SET_REGS = _iow(0x82, ctypes.sizeof(Regs))
GET_SREGS = _ior(0x83, ctypes.sizeof(Sregs))
SET_SREGS = _iow(0x84, ctypes.sizeof(Sregs))
GET_FPU = _ior(0x8C, ctypes.sizeof(Fpu))
SET_FPU = _iow(0x8D, ctypes.sizeof(Fpu))
SET_CPUID2 = _iow(0x90, 8)

# kvm_run: where the vCPU tells why it stopped.
RUN_IMMEDIATE_EXIT = 1
RUN_EXIT_REASON = 8
RUN_EXIT_DATA = 32
EXIT_IO, EXIT_HLT, EXIT_MMIO, EXIT_SHUTDOWN, EXIT_FAIL_ENTRY, EXIT_INTERNAL_ERROR = \
    2, 5, 6, 8, 9, 17
EXIT_NAMES = {0: "unknown", 1: "exception", 2: "port I/O", 3: "hypercall", 4: "debug",
              5: "hlt", 6: "MMIO", 8: "shutdown (triple fault)", 9: "failed VM entry",
              10: "interrupted", 17: "KVM internal error"}
IO_OUT = 1

PROT_READ, PROT_WRITE = 1, 2
MADV_DONTNEED = 4  # on a private file mapping: drop the private copies, read the file again
MAP_SHARED, MAP_PRIVATE, MAP_FIXED, MAP_ANONYMOUS, MAP_NORESERVE = 0x1, 0x2, 0x10, 0x20, 0x4000
_MAP_FAILED = ctypes.c_void_p(-1).value


class PageRegion(ctypes.Structure):  # struct page_region (linux/fs.h)
    _fields_ = [("start", c_uint64), ("end", c_uint64), ("categories", c_uint64)]


class PageScan(ctypes.Structure):  # struct pm_scan_arg (linux/fs.h)
    _fields_ = [(name, c_uint64) for name in (
        "size", "flags", "start", "end", "walk_end", "vec", "vec_len", "max_pages",
        "category_inverted", "category_mask", "category_anyof_mask", "return_mask")]


# /proc/self/pagemap's ioctl (Linux 6.7): the address ranges whose pages are in given
# categories, found by the kernel's page-table walk.
PAGEMAP_SCAN = (3 << 30) | (ctypes.sizeof(PageScan) << 16) | (ord("f") << 8) | 16
PAGE_IS_FILE, PAGE_IS_PRESENT, PAGE_IS_SWAPPED = 1 << 2, 1 << 3, 1 << 4


def ioctl(fd: int, request: int, arg: object = None) -> int:
    """One KVM ioctl; raises OSError with the errno (EINTR included: a kick is a result)."""
    pointer = ctypes.addressof(arg) if isinstance(arg, ctypes.Structure) else arg
    result = _ioctl(fd, request, pointer)
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
    return result


def ioctl_nocheck(fd: int, request: int) -> int:
    """An argument-less ioctl on the hot path: the result, errno left for ctypes.get_errno."""
    return _ioctl(fd, request, None)


def mmap(length: int, prot: int, flags: int, fd: int = -1, address: int = 0) -> int:
    result = _mmap(address or None, length, prot, flags, fd, 0)
    if result is None or result == _MAP_FAILED:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
    return result


def madvise(address: int, length: int, advice: int) -> None:
    if _madvise(address, length, advice) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def munmap(address: int, length: int) -> None:
    if _munmap(address, length) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def available() -> str | None:
    """None when KVM can be used here; otherwise why not."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return f"/dev/kvm cannot be opened ({exc.strerror})"
    try:
        version = ioctl(fd, GET_API_VERSION)
        return None if version == 12 else f"KVM API version {version}, not 12"
    finally:
        os.close(fd)
