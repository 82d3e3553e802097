/* Closes the connection when a forbidden pattern appears, even split across segments:
 * for each direction it keeps the last (pattern length - 1) bytes it has seen. */
#include "hyperfilter.h"

#define MAX_PATTERN 256

static uint8_t pattern[MAX_PATTERN];
static size_t pattern_len;
static uint8_t tail[2][MAX_PATTERN];
static size_t tail_len[2];

static void load_pattern(void) {
    hf_string configured;
    if (pattern_len) return;
    if (!hf_config_get("pattern", &configured) || configured.len == 0 || configured.len > MAX_PATTERN) {
        hf_log(HF_ERROR, "config `pattern` must be 1 to 256 bytes");
        __builtin_trap();
    }
    memcpy(pattern, configured.ptr, configured.len);
    pattern_len = configured.len;
}

static hf_tcp_verdict block(void) {
    hf_metric_add("blocked", 1);
    hf_log(HF_WARN, "forbidden pattern seen: closing the connection");
    return hf_close();
}

/* Remember the last (pattern_len - 1) bytes of what this direction has carried. */
static void remember(int d, hf_bytes data) {
    size_t keep = pattern_len - 1, old = tail_len[d];
    if (data.len >= keep) {
        memcpy(tail[d], data.ptr + data.len - keep, keep);
        tail_len[d] = keep;
        return;
    }
    size_t drop = old + data.len > keep ? old + data.len - keep : 0;
    memmove(tail[d], tail[d] + drop, old - drop);
    memcpy(tail[d] + old - drop, data.ptr, data.len);
    tail_len[d] = old - drop + data.len;
}

hf_tcp_verdict hf_tcp_data(hf_direction direction, hf_bytes data, bool end_of_stream) {
    (void)end_of_stream;
    int d = direction == HF_INBOUND ? 0 : 1;
    load_pattern();
    if (tail_len[d]) {
        /* a pattern split across segments: the old tail joined to the new data's head */
        size_t head = data.len < pattern_len - 1 ? data.len : pattern_len - 1;
        uint8_t *joined = hf_alloc(tail_len[d] + head);
        memcpy(joined, tail[d], tail_len[d]);
        memcpy(joined + tail_len[d], data.ptr, head);
        if (hf_find(joined, tail_len[d] + head, pattern, pattern_len) >= 0) return block();
    }
    if (hf_find(data.ptr, data.len, pattern, pattern_len) >= 0) return block();
    remember(d, data);
    return hf_forward();
}
