/* The guest runtime: everything that runs in a hyperfilter micro-VM besides the plugin.
 *
 * Freestanding (no libc, no interrupts, no devices), in user mode. The host enters at
 * hf_start with a stack; the runtime instantiates the plugin (compiled from wasm by wasm2c, so
 * every memory access is still bounds-checked) and then only ever waits in exit_to_host() for
 * the host's next command in the mailbox. The guest reaches the host only by writing to the
 * exit window (vmm/kvm/layout.py), one address per kind of exit: EXIT_READY, EXIT_DONE,
 * EXIT_TRAP, or EXIT_HOST_CALL + n for host function n. A trap or a CPU exception ends the VM:
 * the host never resumes it.
 *
 * This file implements the wasm-rt.h interface that wasm2c's output needs.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "layout.h"
#include "wasm-rt.h"

struct mailbox {
  uint64_t command, function, post_return, post_return_arg, args[HF_MAX_ARGS], result;
  uint64_t memory_size, memory_limit, input_area;
  uint64_t exported_globals[HF_MAX_EXPORTED_GLOBALS];
};
_Static_assert(offsetof(struct mailbox, command) == HF_COMMAND, "mailbox layout");
_Static_assert(offsetof(struct mailbox, function) == HF_FUNCTION, "mailbox layout");
_Static_assert(offsetof(struct mailbox, post_return) == HF_POST_RETURN, "mailbox layout");
_Static_assert(offsetof(struct mailbox, post_return_arg) == HF_POST_RETURN_ARG,
               "mailbox layout");
_Static_assert(offsetof(struct mailbox, args) == HF_ARGS, "mailbox layout");
_Static_assert(offsetof(struct mailbox, result) == HF_RESULT, "mailbox layout");
_Static_assert(offsetof(struct mailbox, memory_size) == HF_MEMORY_SIZE, "mailbox layout");
_Static_assert(offsetof(struct mailbox, memory_limit) == HF_MEMORY_LIMIT, "mailbox layout");
_Static_assert(offsetof(struct mailbox, input_area) == HF_INPUT_AREA, "mailbox layout");
_Static_assert(offsetof(struct mailbox, exported_globals) == HF_EXPORTED_GLOBALS,
               "mailbox layout");

static volatile struct mailbox *const mailbox = (volatile struct mailbox *)HF_MAILBOX;

/* Generated per plugin (vmm/kvm/glue.py). */
uint64_t hf_dispatch(uint64_t function, volatile const uint64_t *args);
void hf_instantiate(void);

static inline void exit_vm(uint32_t kind, uint32_t value) {
  __asm__ volatile("movl %0, (%1)"
                   : : "r"(value), "r"(HF_EXIT_WINDOW + 8 * (uint64_t)kind) : "memory");
}

__attribute__((noreturn)) void hf_trap(uint32_t code) {
  for (;;) exit_vm(HF_EXIT_TRAP, code);
}

/* Leave the VM with exit `kind`; run the host's CALLs until it RESUMEs us with a result.
 * A host call may need the plugin meanwhile (cabi_realloc for a result): that is a CALL
 * nested in this one, on the same stack. */
static uint64_t exit_to_host(uint32_t kind) {
  for (;;) {
    exit_vm(kind, 0);
    if (mailbox->command == HF_RESUME) return mailbox->result;
    if (mailbox->post_return) {
      uint64_t function = mailbox->post_return - 1;
      mailbox->post_return = 0;
      hf_dispatch(function, &mailbox->post_return_arg);
    }
    mailbox->result = hf_dispatch(mailbox->function, mailbox->args);
    kind = HF_EXIT_DONE;
  }
}

uint64_t hf_host_call(uint32_t function, uint32_t count, const uint64_t *args) {
  for (uint32_t i = 0; i < count; i++) mailbox->args[i] = args[i];
  return exit_to_host(HF_EXIT_HOST_CALL + function);
}

void hf_publish_input_area(uint32_t address) { mailbox->input_area = address; }

/* Where exported i32 global `index` lives, for the host to read it without an exit. */
void hf_publish_global(uint32_t index, const uint32_t *value) {
  if (index < HF_MAX_EXPORTED_GLOBALS) mailbox->exported_globals[index] = (uintptr_t)value;
}

__attribute__((noreturn)) void hf_no_function(void) { hf_trap(HF_TRAP_NO_FUNCTION); }

__attribute__((noreturn, section(".text.start"))) void hf_start(void) {
  hf_instantiate();
  exit_to_host(HF_EXIT_READY);
  hf_trap(HF_TRAP_NO_FUNCTION); /* the host never RESUMEs the top level */
}

/* --- wasm-rt.h ---------------------------------------------------------------------------- */

#if WASM_RT_USE_STACK_DEPTH_COUNT
uint32_t wasm_rt_call_stack_depth;
#endif

void wasm_rt_init(void) {}
bool wasm_rt_is_initialized(void) { return true; }
void wasm_rt_free(void) {}

__attribute__((noreturn)) void wasm_rt_trap(wasm_rt_trap_t trap) {
  switch (trap) {
    case WASM_RT_TRAP_OOB: hf_trap(HF_TRAP_OOB);
    case WASM_RT_TRAP_INT_OVERFLOW: hf_trap(HF_TRAP_INT_OVERFLOW);
    case WASM_RT_TRAP_DIV_BY_ZERO: hf_trap(HF_TRAP_DIV_BY_ZERO);
    case WASM_RT_TRAP_INVALID_CONVERSION: hf_trap(HF_TRAP_INVALID_CONVERSION);
    case WASM_RT_TRAP_UNREACHABLE: hf_trap(HF_TRAP_UNREACHABLE);
    case WASM_RT_TRAP_CALL_INDIRECT: hf_trap(HF_TRAP_CALL_INDIRECT);
    case WASM_RT_TRAP_UNCAUGHT_EXCEPTION: hf_trap(HF_TRAP_UNCAUGHT_EXCEPTION);
    case WASM_RT_TRAP_EXHAUSTION: hf_trap(HF_TRAP_EXHAUSTION);
    default: hf_trap(HF_TRAP_UNREACHABLE);
  }
}

/* The runtime heap: from the end of the image up to linear memory. Only instantiation
 * allocates (tables, function types), so it is part of the snapshot and never freed. */
extern char __heap_start[];
static char *heap_top = __heap_start;

static void *heap_alloc(size_t size) {
  char *p = (char *)(((uintptr_t)heap_top + 15) & ~(uintptr_t)15);
  if (size > (size_t)((char *)HF_LINEAR_BASE - p)) hf_trap(HF_TRAP_HEAP);
  heap_top = p + size;
  return p;
}

/* Function types are compared by the index registration returns: equal types, equal index. */
struct func_type {
  uint32_t params, results;
  wasm_rt_type_t *types;
};
static struct func_type *func_types;
static uint32_t func_type_count, func_type_capacity;

uint32_t wasm_rt_register_func_type(uint32_t params, uint32_t results, ...) {
  wasm_rt_type_t types[params + results + 1];
  va_list args;
  va_start(args, results);
  for (uint32_t i = 0; i < params + results; i++) types[i] = va_arg(args, wasm_rt_type_t);
  va_end(args);
  for (uint32_t i = 0; i < func_type_count; i++) {
    struct func_type *t = &func_types[i];
    if (t->params == params && t->results == results &&
        memcmp(t->types, types, (params + results) * sizeof *types) == 0)
      return i + 1;
  }
  if (func_type_count == func_type_capacity) {
    func_type_capacity = func_type_capacity ? 2 * func_type_capacity : 64;
    struct func_type *grown = heap_alloc(func_type_capacity * sizeof *grown);
    memcpy(grown, func_types, func_type_count * sizeof *grown);
    func_types = grown;
  }
  wasm_rt_type_t *kept = heap_alloc((params + results) * sizeof *types);
  memcpy(kept, types, (params + results) * sizeof *types);
  func_types[func_type_count] = (struct func_type){params, results, kept};
  return ++func_type_count;
}

/* Linear memory: one per plugin, at HF_LINEAR_BASE, at most memory_limit bytes (set by the
 * host in the mailbox before boot). Pages beyond the current size were never written (the
 * bounds checks stop every access there), so growing needs no clearing. */
wasm_rt_memory_t *hf_memory; /* the one memory, once made: what WASI answers write into */

void wasm_rt_allocate_memory(wasm_rt_memory_t *memory, uint32_t initial_pages,
                             uint32_t max_pages) {
  if (hf_memory) hf_trap(HF_TRAP_MULTI_MEMORY);
  hf_memory = memory;
  uint64_t limit_pages = mailbox->memory_limit / HF_WASM_PAGE;
  if (initial_pages > limit_pages) hf_trap(HF_TRAP_INITIAL_MEMORY);
  memory->data = (uint8_t *)HF_LINEAR_BASE;
  memory->pages = initial_pages;
  memory->max_pages = max_pages < limit_pages ? max_pages : (uint32_t)limit_pages;
  memory->size = initial_pages * HF_WASM_PAGE;
  mailbox->memory_size = memory->size;
}

uint32_t wasm_rt_grow_memory(wasm_rt_memory_t *memory, uint32_t delta) {
  uint32_t old_pages = memory->pages;
  uint64_t new_pages = (uint64_t)old_pages + delta;
  if (new_pages > memory->max_pages) return (uint32_t)-1;
  memory->pages = (uint32_t)new_pages;
  memory->size = (uint32_t)(new_pages * HF_WASM_PAGE);
  mailbox->memory_size = memory->size;
  return old_pages;
}

void wasm_rt_free_memory(wasm_rt_memory_t *memory) { (void)memory; }

#define TABLE_FUNCTIONS(kind, type, null)                                                   \
  void wasm_rt_allocate_##kind##_table(wasm_rt_##kind##_table_t *table, uint32_t elements, \
                                       uint32_t max_elements) {                            \
    table->data = heap_alloc((size_t)elements * sizeof(type));                             \
    for (uint32_t i = 0; i < elements; i++) table->data[i] = null;                         \
    table->size = elements;                                                                \
    table->max_size = max_elements;                                                        \
  }                                                                                        \
  void wasm_rt_free_##kind##_table(wasm_rt_##kind##_table_t *table) { (void)table; }      \
  uint32_t wasm_rt_grow_##kind##_table(wasm_rt_##kind##_table_t *table, uint32_t delta,    \
                                       type init) {                                        \
    uint32_t old_size = table->size;                                                       \
    uint64_t new_size = (uint64_t)old_size + delta;                                        \
    if (new_size > table->max_size) return (uint32_t)-1;                                   \
    type *data = heap_alloc((size_t)new_size * sizeof(type));                              \
    memcpy(data, table->data, (size_t)old_size * sizeof(type));                            \
    for (uint64_t i = old_size; i < new_size; i++) data[i] = init;                         \
    table->data = data;                                                                    \
    table->size = (uint32_t)new_size;                                                      \
    return old_size;                                                                       \
  }

TABLE_FUNCTIONS(funcref, wasm_rt_funcref_t, wasm_rt_funcref_null_value)
TABLE_FUNCTIONS(externref, wasm_rt_externref_t, wasm_rt_externref_null_value)

/* --- what compiled C expects from libc ---------------------------------------------------- */

void *memcpy(void *dest, const void *src, size_t n) {
  void *d = dest;
  __asm__ volatile("rep movsb" : "+D"(d), "+S"(src), "+c"(n) : : "memory");
  return dest;
}

void *memmove(void *dest, const void *src, size_t n) {
  if ((uintptr_t)dest - (uintptr_t)src >= n) return memcpy(dest, src, n);
  char *d = (char *)dest + n - 1;
  const char *s = (const char *)src + n - 1;
  __asm__ volatile("std; rep movsb; cld" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
  return dest;
}

void *memset(void *dest, int c, size_t n) {
  void *d = dest;
  __asm__ volatile("rep stosb" : "+D"(d), "+c"(n) : "a"(c) : "memory");
  return dest;
}

int memcmp(const void *a, const void *b, size_t n) {
  const unsigned char *x = a, *y = b;
  for (size_t i = 0; i < n; i++)
    if (x[i] != y[i]) return x[i] - y[i];
  return 0;
}

/* SSE4.1 rounding: imm8 bits 0-1 mode (0 nearest, 1 down, 2 up, 3 toward zero), bit 3
 * suppresses the inexact exception. */
#define ROUND(name, type, insn, mode)                                           \
  type name(type x) {                                                           \
    __asm__(insn " %1, %0, %0" : "+x"(x) : "i"(mode));                          \
    return x;                                                                   \
  }
ROUND(nearbyint, double, "roundsd", 8)
ROUND(floor, double, "roundsd", 9)
ROUND(ceil, double, "roundsd", 10)
ROUND(trunc, double, "roundsd", 11)
ROUND(nearbyintf, float, "roundss", 8)
ROUND(floorf, float, "roundss", 9)
ROUND(ceilf, float, "roundss", 10)
ROUND(truncf, float, "roundss", 11)

double sqrt(double x) { return __builtin_sqrt(x); }
float sqrtf(float x) { return __builtin_sqrtf(x); }
double fabs(double x) { return __builtin_fabs(x); }
float fabsf(float x) { return __builtin_fabsf(x); }
double copysign(double x, double y) { return __builtin_copysign(x, y); }
float copysignf(float x, float y) { return __builtin_copysignf(x, y); }
