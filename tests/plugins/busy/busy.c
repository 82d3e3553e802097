#include "hyperfilter.h"

static volatile uint64_t sink;

static uint64_t config_number(const char *key, uint64_t otherwise) {
    hf_string value;
    if (!hf_config_get(key, &value) || value.len == 0)
        return otherwise;
    uint64_t number = 0;
    for (size_t i = 0; i < value.len && value.ptr[i] >= '0' && value.ptr[i] <= '9'; i++)
        number = number * 10 + (uint64_t)(value.ptr[i] - '0');
    return number;
}

hf_tcp_verdict hf_tcp_data(hf_direction direction, hf_bytes data, bool eos) {
    (void)direction; (void)data; (void)eos;
    uint64_t until = hf_clock_monotonic() + config_number("busy-ms", 0) * 1000000ull;
    uint64_t between_reads = config_number("clock-every", 100000);
    while (hf_clock_monotonic() < until)  /* a host call */
        for (uint64_t i = 0; i < between_reads; i++) sink += i;  /* computing */
    return hf_forward();
}
