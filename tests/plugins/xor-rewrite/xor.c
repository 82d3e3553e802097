#include "hyperfilter.h"

#define KEY 0x5A

hf_tcp_verdict hf_tcp_data(hf_direction direction, hf_bytes data, bool eos) {
    (void)direction; (void)eos;
    if (data.len == 0) return hf_forward();
    uint8_t *out = hf_alloc(data.len);
    for (size_t i = 0; i < data.len; i++) out[i] = data.ptr[i] ^ KEY;
    return hf_replace(out, data.len);
}
