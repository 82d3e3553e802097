#include "hyperfilter.h"

static bool starts(hf_bytes data, const char *prefix) {
    size_t len = strlen(prefix);
    return data.len >= len && memcmp(data.ptr, prefix, len) == 0;
}

static size_t put(uint8_t *at, hf_string s) {
    memcpy(at, s.ptr, s.len);
    return s.len;
}

static hf_tcp_verdict describe(const hf_stream_info *info) {
    uint8_t *out = hf_alloc(info->source_address.len + info->destination_address.len +
                            info->server_name.len + 4);
    size_t len = put(out, info->source_address);
    out[len++] = ' ';
    len += put(out + len, info->destination_address);
    out[len++] = ' ';
    len += put(out + len, info->server_name);
    out[len++] = '\r';
    out[len++] = '\n';
    return hf_answer(out, len);
}

hf_tcp_verdict hf_tcp_open(const hf_stream_info *info) {
    hf_string text;
    if (hf_config_get("refusal", &text) && text.len) return hf_answer_and_close(text.ptr, text.len);
    if (!hf_config_get("greeting", &text) || !text.len) return hf_forward();
    if (hf_equals(text, "info")) return describe(info);
    return hf_answer(text.ptr, text.len);
}

hf_tcp_verdict hf_tcp_data(hf_direction direction, hf_bytes data, bool eos) {
    (void)eos;
    if (direction == HF_OUTBOUND)
        return starts(data, "SECRET") ? hf_answer("[withheld]\r\n", 12) : hf_forward();
    if (starts(data, "QUIT")) return hf_answer_and_close("BYE\r\n", 5);
    if (!starts(data, "ASK ")) return hf_forward();
    uint8_t *out = hf_alloc(data.len + 3);
    memcpy(out, "ANSWER ", 7);
    memcpy(out + 7, data.ptr + 4, data.len - 4);
    return hf_answer(out, data.len + 3);
}
