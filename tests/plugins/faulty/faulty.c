#include "hyperfilter.h"

typedef enum { NONE, TRAP, LOOP, HOG, OOB, BADPTR } fault;

static fault wanted(const uint8_t *text, size_t len) {
    if (hf_find(text, len, "trap", 4) >= 0) return TRAP;
    if (hf_find(text, len, "loop", 4) >= 0) return LOOP;
    if (hf_find(text, len, "hog", 3) >= 0) return HOG;
    if (hf_find(text, len, "oob", 3) >= 0) return OOB;
    if (hf_find(text, len, "badptr", 6) >= 0) return BADPTR;
    return NONE;
}

static volatile uint64_t sink;

static void misbehave(fault f) {
    switch (f) {
    case TRAP: __builtin_trap();
    case LOOP: for (;;) sink++;
    case HOG: for (;;) sink += (uintptr_t)hf_alloc(1 << 20);  /* traps when memory.grow fails */
    case OOB: sink = *(volatile uint64_t *)(uintptr_t)0xfffffff0u; break;
    default: break;
    }
}

hf_tcp_verdict hf_tcp_data(hf_direction direction, hf_bytes data, bool eos) {
    (void)direction; (void)eos;
    fault f = wanted(data.ptr, data.len);
    misbehave(f);
    if (f == BADPTR) return (hf_tcp_verdict){HF_REPLACE, {(const uint8_t *)0xfffff000u, 64}};
    return hf_forward();
}

hf_http_verdict hf_http_headers(hf_direction direction, hf_fields headers, bool eos) {
    (void)direction; (void)eos;
    const hf_field *header = hf_header(headers, "x-fault");
    if (header) misbehave(wanted(header->value.ptr, header->value.len));
    return hf_http_forward();
}
