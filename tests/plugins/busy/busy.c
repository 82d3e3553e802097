#include "hyperfilter.h"

static volatile uint64_t sink;

static uint64_t busy_ns(void) {
    hf_string value;
    uint64_t ms = 0;
    if (hf_config_get("busy-ms", &value))
        for (size_t i = 0; i < value.len && value.ptr[i] >= '0' && value.ptr[i] <= '9'; i++)
            ms = ms * 10 + (uint64_t)(value.ptr[i] - '0');
    return ms * 1000000ull;
}

hf_tcp_verdict hf_tcp_data(hf_direction direction, hf_bytes data, bool eos) {
    (void)direction; (void)data; (void)eos;
    uint64_t until = hf_clock_monotonic() + busy_ns();
    while (hf_clock_monotonic() < until)
        for (int i = 0; i < 10000; i++) sink += (uint64_t)i;  /* computing, not calling out */
    return hf_forward();
}
