#include "hyperfilter.h"

hf_http_verdict hf_http_body(hf_direction direction, hf_bytes body, bool end_of_stream) {
    (void)end_of_stream;
    hf_http_verdict verdict = hf_http_forward();
    if (body.len == 0) return verdict;
    uint8_t *out = hf_alloc(body.len);
    for (size_t i = 0; i < body.len; i++) {
        uint8_t c = body.ptr[i];
        if (direction == HF_INBOUND) out[i] = c >= 'a' && c <= 'z' ? (uint8_t)(c - 32) : c;
        else out[i] = c == 'E' ? '3' : c;
    }
    hf_http_set_body(&verdict, out, body.len);
    return verdict;
}

hf_http_verdict hf_http_trailers(hf_direction direction, hf_fields trailers) {
    const hf_field *verdict_trailer = hf_header(trailers, "x-verdict");
    if (direction == HF_INBOUND && verdict_trailer && verdict_trailer->value.len == 4 &&
        memcmp(verdict_trailer->value.ptr, "deny", 4) == 0)
        return hf_http_respond(403, "denied by trailer\n", 18);
    hf_http_verdict verdict = hf_http_forward();
    hf_http_set_header(&verdict, "x-checked", "yes", 3);
    return verdict;
}
