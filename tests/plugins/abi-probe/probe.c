#include "hyperfilter.h"

static uint8_t *join(const hf_stream_info *info, size_t *len) {
    size_t n = info->source_address.len + info->destination_address.len + info->server_name.len + 3;
    for (size_t i = 0; i < info->metadata_len; i++)
        n += info->metadata[i].key.len + info->metadata[i].value.len + 2;
    uint8_t *out = hf_alloc(n), *at = out;
    memcpy(at, info->source_address.ptr, info->source_address.len); at += info->source_address.len;
    *at++ = '|';
    memcpy(at, info->destination_address.ptr, info->destination_address.len);
    at += info->destination_address.len;
    *at++ = '|';
    memcpy(at, info->server_name.ptr, info->server_name.len); at += info->server_name.len;
    *at++ = '|';
    for (size_t i = 0; i < info->metadata_len; i++) {
        memcpy(at, info->metadata[i].key.ptr, info->metadata[i].key.len); at += info->metadata[i].key.len;
        *at++ = '=';
        memcpy(at, info->metadata[i].value.ptr, info->metadata[i].value.len); at += info->metadata[i].value.len;
        *at++ = ';';
    }
    *len = n;
    return out;
}

static bool is(hf_bytes data, const char *text) {
    return data.len == strlen(text) && memcmp(data.ptr, text, data.len) == 0;
}

hf_tcp_verdict hf_tcp_open(const hf_stream_info *info) {
    size_t len;
    uint8_t *text = join(info, &len);
    return hf_replace(text, len);
}

hf_tcp_verdict hf_tcp_data(hf_direction direction, hf_bytes data, bool eos) {
    if (is(data, "pass")) return hf_forward();
    if (is(data, "close")) return hf_close();
    if (is(data, "reset")) return hf_reset();
    if (is(data, "answer")) return hf_answer("answered", 8);
    if (is(data, "bye")) return hf_answer_and_close("bye\r\n", 5);
    uint8_t *out = hf_alloc(data.len + 2);
    for (size_t i = 0; i < data.len; i++) out[i] = data.ptr[data.len - 1 - i];
    out[data.len] = (uint8_t)('0' + direction);
    out[data.len + 1] = eos ? 'E' : '-';
    return hf_replace(out, data.len + 2);
}

hf_http_verdict hf_http_open(const hf_stream_info *info) {
    size_t len;
    uint8_t *text = join(info, &len);
    hf_http_verdict verdict = hf_http_forward();
    hf_http_set_header(&verdict, "x-info", text, len);
    return verdict;
}

/* Every header comes back as x-seen-<name> (order kept), x-drop-* headers are removed, and a
 * body replaces the original when the headers end the stream. */
hf_http_verdict hf_http_headers(hf_direction direction, hf_fields headers, bool eos) {
    hf_http_verdict verdict = hf_http_forward();
    for (size_t i = 0; i < headers.len; i++) {
        hf_string name = headers.ptr[i].name;
        if (name.len > 7 && memcmp(name.ptr, "x-drop-", 7) == 0) {
            char *copy = hf_alloc(name.len + 1);
            memcpy(copy, name.ptr, name.len); copy[name.len] = 0;
            hf_http_remove_header(&verdict, copy);
            continue;
        }
        if (name.len && name.ptr[0] == ':') continue;
        char *seen = hf_alloc(name.len + 8);
        memcpy(seen, "x-seen-", 7); memcpy(seen + 7, name.ptr, name.len); seen[name.len + 7] = 0;
        hf_http_set_header(&verdict, seen, headers.ptr[i].value.ptr, headers.ptr[i].value.len);
    }
    if (eos) hf_http_set_body(&verdict, direction == HF_INBOUND ? "in" : "out", direction == HF_INBOUND ? 2 : 3);
    return verdict;
}

hf_http_verdict hf_http_body(hf_direction direction, hf_bytes body, bool eos) {
    (void)direction;
    if (body.len >= 7 && memcmp(body.ptr, "respond", 7) == 0) {
        hf_http_verdict verdict = hf_http_respond(418, body.ptr + 7, body.len - 7);
        hf_http_set_header(&verdict, "x-teapot", eos ? "end" : "more", eos ? 3 : 4);
        hf_http_set_header(&verdict, "x-empty", "", 0);
        return verdict;
    }
    if (body.len == 0) return hf_http_forward();
    uint8_t *upper = hf_alloc(body.len);
    for (size_t i = 0; i < body.len; i++)
        upper[i] = body.ptr[i] >= 'a' && body.ptr[i] <= 'z' ? (uint8_t)(body.ptr[i] - 32) : body.ptr[i];
    hf_http_verdict verdict = hf_http_forward();
    hf_http_set_body(&verdict, upper, body.len);
    return verdict;
}

hf_http_verdict hf_http_trailers(hf_direction direction, hf_fields trailers) {
    hf_http_verdict verdict = hf_http_forward();
    for (size_t i = 0; i < trailers.len; i++) {
        char *name = hf_alloc(trailers.ptr[i].name.len + 1);
        memcpy(name, trailers.ptr[i].name.ptr, trailers.ptr[i].name.len);
        name[trailers.ptr[i].name.len] = 0;
        hf_http_set_header(&verdict, name, direction == HF_INBOUND ? "req" : "resp", direction == HF_INBOUND ? 3 : 4);
    }
    return verdict;
}
