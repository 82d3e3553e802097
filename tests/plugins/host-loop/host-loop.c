#include "hyperfilter.h"

#define PAGE 4096

static bool starts(hf_bytes data, const char *prefix) {
    size_t n = strlen(prefix);
    return data.len >= n && memcmp(data.ptr, prefix, n) == 0;
}

/* Grows linear memory by `mib` MiB and writes one byte in each 4 KiB page of it. */
static void write_fresh(uint32_t mib) {
    long first = __builtin_wasm_memory_grow(0, mib * 16);
    if (first < 0) __builtin_trap();
    volatile uint8_t *memory = (volatile uint8_t *)(uintptr_t)((unsigned long)first * 65536);
    for (uint32_t offset = 0; offset < mib << 20; offset += PAGE) memory[offset] = 1;
}

hf_tcp_verdict hf_tcp_data(hf_direction direction, hf_bytes data, bool eos) {
    (void)direction; (void)eos;
    if (starts(data, "log")) for (;;) hf_log(HF_INFO, "looping");
    if (starts(data, "count")) {
        int64_t total;
        for (;;) hf_state_increment("loops", 1, 0, &total);
    }
    if (starts(data, "write ")) {
        uint32_t mib = 0;
        for (size_t i = 6; i < data.len && data.ptr[i] >= '0' && data.ptr[i] <= '9'; i++)
            mib = mib * 10 + (uint32_t)(data.ptr[i] - '0');
        write_fresh(mib);
    }
    return hf_forward();
}
