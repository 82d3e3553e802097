#include "hyperfilter.h"

static unsigned count;  /* lives in this sandbox's linear memory only */

static size_t format(char *out, unsigned n) {
    char digits[12];
    size_t len = 0;
    do { digits[len++] = (char)('0' + n % 10); n /= 10; } while (n);
    for (size_t i = 0; i < len; i++) out[i] = digits[len - 1 - i];
    return len;
}

hf_tcp_verdict hf_tcp_data(hf_direction direction, hf_bytes data, bool eos) {
    (void)eos;
    if (direction != HF_INBOUND || data.len == 0) return hf_forward();
    char *out = hf_alloc(data.len + 12);
    size_t len = format(out, ++count);
    out[len++] = ':';
    memcpy(out + len, data.ptr, data.len);
    return hf_replace(out, len + data.len);
}

hf_http_verdict hf_http_headers(hf_direction direction, hf_fields headers, bool eos) {
    (void)headers; (void)eos;
    hf_http_verdict verdict = hf_http_forward();
    if (direction == HF_INBOUND) {
        char text[12];
        hf_http_set_header(&verdict, "x-count", text, format(text, ++count));
    }
    return verdict;
}
