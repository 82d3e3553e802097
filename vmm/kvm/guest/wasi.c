/* What the WASI preview 2 answers generated for a component (vmm/kvm/wasi_glue.py) share:
 * the component's handle table, and checked stores into its linear memory.
 *
 * Handles are indices into one table for every resource the guest makes (output and input
 * streams, pollables, the network), each with its resource's kind; 0 is never a handle. A
 * handle of any other resource cannot exist, so a call on one, like a call on a dropped or
 * never-made handle, traps, as the component model's own tables do. The table is in the
 * guest's memory: what instantiation made is in the snapshot, each stream starts from it. */
#include <stddef.h>
#include <stdint.h>

#include "layout.h"
#include "wasm-rt.h"

#define MAX_HANDLES 1024

__attribute__((noreturn)) void hf_trap(uint32_t code);

struct handle {
  uint32_t kind, rep; /* kind 0: free */
};
static struct handle handles[MAX_HANDLES];

/* The component's linear memory (vmm/kvm/guest/runtime.c), none before it is made. */
extern wasm_rt_memory_t *hf_memory;

uint32_t hf_handle_new(uint32_t kind, uint32_t rep) {
  for (uint32_t i = 1; i < MAX_HANDLES; i++)
    if (!handles[i].kind) {
      handles[i] = (struct handle){kind, rep};
      return i;
    }
  hf_trap(HF_TRAP_HANDLES);
}

uint32_t hf_handle_rep(uint32_t handle, uint32_t kind) {
  if (handle == 0 || handle >= MAX_HANDLES || handles[handle].kind != kind || !kind)
    hf_trap(HF_TRAP_HANDLE);
  return handles[handle].rep;
}

void hf_handle_drop(uint32_t handle, uint32_t kind) {
  hf_handle_rep(handle, kind);
  handles[handle].kind = 0;
}

static uint8_t *at(uint32_t ptr, uint32_t size) {
  if (!hf_memory || (uint64_t)ptr + size > hf_memory->size) hf_trap(HF_TRAP_OOB);
  return hf_memory->data + ptr;
}

void hf_store8(uint32_t ptr, uint8_t value) { *at(ptr, 1) = value; }
void hf_store16(uint32_t ptr, uint16_t value) { __builtin_memcpy(at(ptr, 2), &value, 2); }
void hf_store32(uint32_t ptr, uint32_t value) { __builtin_memcpy(at(ptr, 4), &value, 4); }
void hf_store64(uint32_t ptr, uint64_t value) { __builtin_memcpy(at(ptr, 8), &value, 8); }
uint32_t hf_load32(uint32_t ptr) {
  uint32_t value;
  __builtin_memcpy(&value, at(ptr, 4), 4);
  return value;
}
