#include "hyperfilter.h"

static const char CARD[] = "4111 1111 1111 1111";
#define CARD_LEN (sizeof CARD - 1)

hf_tcp_verdict hf_tcp_data(hf_direction direction, hf_bytes data, bool eos) {
    (void)eos;
    if (direction != HF_INBOUND || data.len < CARD_LEN) return hf_forward();
    uint8_t *out = NULL;
    for (size_t i = 0; i + CARD_LEN <= data.len; i++) {
        if (memcmp(data.ptr + i, CARD, CARD_LEN) != 0) continue;
        if (out == NULL) {
            out = hf_alloc(data.len);
            memcpy(out, data.ptr, data.len);
        }
        memset(out + i, '#', CARD_LEN);  /* only what this segment holds: the bug */
    }
    return out ? hf_replace(out, data.len) : hf_forward();
}
