/* Masks Luhn-valid card numbers in response bodies, keeping the last four digits. */
#include "hyperfilter.h"

static bool digit(uint8_t c) { return c >= '0' && c <= '9'; }

static bool luhn_valid(const uint8_t *run, size_t len) {
    int sum = 0, position = 0;
    for (size_t i = len; i-- > 0;) {
        if (!digit(run[i])) continue;
        int value = run[i] - '0';
        if (position++ % 2 == 1) value = value * 2 > 9 ? value * 2 - 9 : value * 2;
        sum += value;
    }
    return sum % 10 == 0;
}

hf_http_verdict hf_http_body(hf_direction direction, hf_bytes body, bool end_of_stream) {
    (void)end_of_stream;
    if (direction != HF_OUTBOUND) return hf_http_forward();
    const uint8_t *in = body.ptr;
    uint8_t *out = 0;
    uint64_t masked = 0;
    size_t i = 0;
    while (i < body.len) {
        if (!digit(in[i])) { i++; continue; }
        /* a run of digits, single spaces or dashes allowed between them */
        size_t end = i, digits = 0;
        for (size_t j = i; j < body.len; j++) {
            if (digit(in[j])) { digits++; end = j + 1; continue; }
            if ((in[j] == ' ' || in[j] == '-') && j + 1 < body.len && digit(in[j + 1])) continue;
            break;
        }
        if (digits >= 13 && digits <= 19 && luhn_valid(in + i, end - i)) {
            if (!out) { out = hf_alloc(body.len); memcpy(out, in, body.len); }
            size_t seen = 0;
            for (size_t k = i; k < end; k++)
                if (digit(in[k]) && ++seen <= digits - 4) out[k] = '*';
            masked++;
        }
        i = end;
    }
    if (!out) return hf_http_forward();
    hf_metric_add("cards_masked", masked);
    hf_http_verdict verdict = hf_http_forward();
    hf_http_set_body(&verdict, out, body.len);
    return verdict;
}
