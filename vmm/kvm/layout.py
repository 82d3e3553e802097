"""The guest's world: its physical memory layout, its page tables, and the protocol it speaks
with the host (mailbox, exits, commands, trap codes). One source for both sides: the guest
runtime is compiled against the header `guest_header()` writes.

    0x0000_0000  guard page (unmapped: a null dereference is a fault, not a read)
    0x0000_1000  GDT
    0x0000_2000  page tables: PML4, PDPT, PD, one PT for the first 2 MiB
    0x0001_0000  mailbox: call, arguments, result (host <-> guest)
    0x0002_0000  guard page below the stack
    0x0010_0000  top of the stack (it grows down); the image starts here: its header, code
                 and read-only data, mapped read-only and executable
    writable     the image's data, at a 2 MiB boundary: writable, never executable
    image end    runtime heap (tables, function types)
    0x0400_0000  the plugin's linear memory, `memory_limit` bytes, never executable
    0x3FE0_0000  the exit window: no memory behind it, so each write to it is a VM exit

Identity mapped: guest virtual = guest physical. Below 2 MiB in 4 KiB pages (for the guard
pages), above in 2 MiB pages. The slice is one KVM memory slot; there is nothing else. Only
the image's code is executable and nothing executable is writable, so a guest cannot change
its code, whatever it writes; and since it never writes those pages, a reset need not look at
them (vmm/kvm/machine.py).

The guest runs in user mode (CPL 3), and leaves the VM by writing a 32-bit value to an
address in the exit window, one address per kind of exit: what KVM reports as an MMIO exit.
Not `out` to a port: some KVM implementations (PVM, a shadow-paging KVM for nested clouds)
run CPL 0 code only by emulating it, an instruction at a time, and fault on `out` at CPL 3;
user mode and MMIO run natively there and on hardware-assisted KVM alike. It also means the
plugin never has the privilege to change its page tables, even past wasm's checks.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

PAGE = 0x1000
LARGE_PAGE = 0x200000
GDT = 0x1000
PML4, PDPT, PD, PT = 0x2000, 0x3000, 0x4000, 0x5000
MAILBOX = 0x10000
STACK_GUARD = 0x20000
STACK_TOP = IMAGE = 0x100000
LINEAR_BASE = 0x4000000  # 64 MiB: a Python component's image is about 47 MiB
EXIT_WINDOW = 0x3FE00000  # the last 2 MiB of the one page directory
MAX_SLOT = EXIT_WINDOW
MAX_MEMORY_LIMIT = MAX_SLOT - LINEAR_BASE
WASM_PAGE = 0x10000

# Mailbox: 8-byte slots.
COMMAND, FUNCTION, POST_RETURN, POST_RETURN_ARG = 0, 8, 16, 24
ARGS, RESULT, MEMORY_SIZE, MEMORY_LIMIT, INPUT_AREA = 32, 160, 168, 176, 184
MAX_ARGS = 16  # the canonical ABI's limit on flat parameters
# From here, one slot per i32 global the module exports: the guest address where the runtime
# keeps its value (vmm/kvm/glue.py), written at instantiation. Globals past the last slot
# have none.
EXPORTED_GLOBALS, MAX_EXPORTED_GLOBALS = 192, 256

# Commands the host leaves in the mailbox before resuming the guest.
CALL = 1  # run function FUNCTION of the plugin with ARGS; the result goes to RESULT. First,
#           if POST_RETURN is not 0, run function POST_RETURN - 1 with POST_RETURN_ARG (the
#           last call's post-return, which need not cost an exit of its own)
RESUME = 2  # the host call is answered: its result is in RESULT

# Exits: the guest writes to EXIT_WINDOW + 8 * kind.
EXIT_READY = 0x10  # initialised, waiting for calls
EXIT_DONE = 0x11  # a CALL returned
EXIT_TRAP = 0x12  # the value written is a TRAP_* code; the guest never continues
EXIT_HOST_CALL = 0x100  # + the host function's number (vmm/kvm/glue.py)
EXIT_KINDS = 0x200

TRAPS = {
    1: "out of bounds memory access",
    2: "integer overflow",
    3: "integer divide by zero",
    4: "invalid conversion to integer",
    5: "wasm `unreachable` instruction executed",
    6: "indirect call type mismatch or null/out of bounds table entry",
    7: "uncaught exception",
    8: "call stack exhausted",
    16: "the runtime heap is exhausted (tables too large)",
    17: "the initial linear memory is larger than the memory limit",
    18: "more than one linear memory (multi-memory is not supported)",
    19: "the host called a function the plugin does not have",
    20: "a WASI handle that does not exist, or is of another resource",
    21: "more WASI handles live at once than the guest keeps",
}
TRAP_OOB = 1
# From here a trap names a WASI function the guest does not provide, by its index in the
# plugin's list of them (vmm/kvm/wasi_glue.py).
TRAP_UNPROVIDED = 0x100


class ImageError(Exception):
    """An image whose header does not describe the layout above."""


# The image's first 16 bytes (guest.ld): the entry point's address and the start of its
# writable part.
_IMAGE_HEADER = struct.Struct("<QQ")


@dataclass(frozen=True)
class ImageLayout:
    entry: int
    writable: int  # where the image's data starts: [IMAGE, writable) is its code

    @property
    def code(self) -> range:
        return range(IMAGE, self.writable)


def image_layout(image: bytes) -> ImageLayout:
    """What the image's header says, checked against the layout."""
    if len(image) < _IMAGE_HEADER.size:
        raise ImageError("the image is shorter than its header")
    entry, writable = _IMAGE_HEADER.unpack_from(image)
    if not IMAGE + _IMAGE_HEADER.size <= entry < writable <= LINEAR_BASE or writable % LARGE_PAGE:
        raise ImageError(f"its header (entry {entry:#x}, data at {writable:#x}) does not fit "
                         "the guest's layout")
    return ImageLayout(entry, writable)


def slot_size(memory_limit: int) -> int:
    """Bytes of guest memory for a plugin whose linear memory may reach `memory_limit`."""
    return LINEAR_BASE + -(-memory_limit // LARGE_PAGE) * LARGE_PAGE


_PRESENT, _WRITABLE, _USER, _ACCESSED, _DIRTY, _LARGE, _NO_EXECUTE = (
    1, 2, 4, 0x20, 0x40, 0x80, 1 << 63)
# null, 64-bit code and data for CPL 3
_GDT_ENTRIES = (0, 0x00AFFB000000FFFF, 0x00CFF3000000FFFF)
CODE_SELECTOR, DATA_SELECTOR = 0x08 | 3, 0x10 | 3


def system_tables(size: int, code: range) -> tuple[int, bytes]:
    """The GDT and page tables for a slot of `size` bytes whose image has its code at `code`,
    as (address, bytes) to copy in."""
    entries = struct.Struct("<512Q")
    # Accessed and dirty set up front: nothing for the hypervisor to track on first use.
    data = _PRESENT | _WRITABLE | _USER | _ACCESSED | _DIRTY | _NO_EXECUTE
    executable = _PRESENT | _USER | _ACCESSED
    # The GDT and the page tables are the CPU's alone: a guest in user mode that wrote them
    # (past wasm's checks) could map what it likes, or give itself a gate to CPL 0.
    system = data & ~_USER

    def page(address: int) -> int:
        return address | (executable if address in code else
                          system if GDT <= address <= PT else data)

    pt = [0 if address in (0, STACK_GUARD) else page(address)
          for address in range(0, LARGE_PAGE, PAGE)]
    # A directory entry points to the page table (its pages' bits are the PT's) or maps 2 MiB.
    pd = [PT | _PRESENT | _WRITABLE | _USER | _ACCESSED] + [
        page(address) | _LARGE for address in range(LARGE_PAGE, size, LARGE_PAGE)]
    pd += [0] * (EXIT_WINDOW // LARGE_PAGE - len(pd)) + [EXIT_WINDOW | data | _LARGE]
    tables = bytearray(PT + PAGE - GDT)
    struct.pack_into(f"<{len(_GDT_ENTRIES)}Q", tables, 0, *_GDT_ENTRIES)
    upper = _PRESENT | _WRITABLE | _USER | _ACCESSED  # what the entries below allow
    entries.pack_into(tables, PML4 - GDT, PDPT | upper, *[0] * 511)
    entries.pack_into(tables, PDPT - GDT, PD | upper, *[0] * 511)
    entries.pack_into(tables, PD - GDT, *pd)
    entries.pack_into(tables, PT - GDT, *pt)
    return GDT, bytes(tables)


def guest_header() -> str:
    """`layout.h` for the guest runtime."""
    names = ("MAILBOX", "STACK_TOP", "LINEAR_BASE", "EXIT_WINDOW", "WASM_PAGE", "COMMAND",
             "FUNCTION", "POST_RETURN", "POST_RETURN_ARG", "ARGS", "RESULT", "MEMORY_SIZE",
             "MEMORY_LIMIT", "INPUT_AREA", "MAX_ARGS", "EXPORTED_GLOBALS",
             "MAX_EXPORTED_GLOBALS", "CALL", "RESUME", "EXIT_READY", "EXIT_DONE", "EXIT_TRAP",
             "EXIT_HOST_CALL")
    lines = [f"#define HF_{name} {globals()[name]:#x}" for name in names]
    codes = {"OOB": 1, "INT_OVERFLOW": 2, "DIV_BY_ZERO": 3, "INVALID_CONVERSION": 4,
             "UNREACHABLE": 5, "CALL_INDIRECT": 6, "UNCAUGHT_EXCEPTION": 7, "EXHAUSTION": 8,
             "HEAP": 16, "INITIAL_MEMORY": 17, "MULTI_MEMORY": 18, "NO_FUNCTION": 19,
             "HANDLE": 20, "HANDLES": 21}
    lines += [f"#define HF_TRAP_{name} {code}" for name, code in codes.items()]
    assert {code: TRAPS[code] for code in codes.values()} == TRAPS
    return "/* Generated by vmm/kvm/layout.py: the guest's layout and protocol. */\n" + \
        "\n".join(lines) + "\n"
