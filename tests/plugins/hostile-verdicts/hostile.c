#include "hyperfilter.h"

/* What the request's x-verdict header asked for: kept for the response headers (one sandbox
 * serves one request). */
static char wanted[64];
static size_t wanted_len;

static bool asked(const char *name) {
    return hf_equals((hf_string){wanted, wanted_len}, name);
}

/* `entries` headers named `name`, every value the same `value_len` bytes: what the host copies
 * if it lifts entry by entry is entries * value_len. */
static hf_http_verdict aliased(hf_http_verdict verdict, size_t entries, size_t value_len,
                               const char *name) {
    uint8_t *value = hf_alloc(value_len);
    memset(value, 'a', value_len);
    verdict.headers = hf_alloc(entries * sizeof(hf_field));
    for (size_t i = 0; i < entries; i++)
        verdict.headers[i] = (hf_field){{name, strlen(name)}, {value, value_len}};
    verdict.headers_len = verdict.headers_cap = entries;
    return verdict;
}

static hf_http_verdict setting(const char *name, const char *value) {
    hf_http_verdict verdict = hf_http_forward();
    hf_http_set_header(&verdict, name, value, strlen(value));
    return verdict;
}

static hf_http_verdict removing(const char *name) {
    hf_http_verdict verdict = hf_http_forward();
    hf_http_remove_header(&verdict, name);
    return verdict;
}

/* Enough distinct headers that, with the request's own, Envoy would hold more than 100. */
static hf_http_verdict filling(void) {
    hf_http_verdict verdict = hf_http_forward();
    char name[] = "x-fill-00";
    for (int i = 0; i < 99; i++) {
        name[7] = (char)('0' + i / 10);
        name[8] = (char)('0' + i % 10);
        hf_http_set_header(&verdict, name, "1", 1);
    }
    return verdict;
}

static hf_http_verdict request_verdict(void) {
    if (asked("alias-3000")) return aliased(hf_http_forward(), 3000, 1 << 20, "x-alias");
    if (asked("alias-100")) return aliased(hf_http_forward(), 100, 1 << 20, "x-alias");
    if (asked("alias-respond")) return aliased(hf_http_respond(200, "", 0), 3000, 1 << 20, "x-alias");
    if (asked("many")) return aliased(hf_http_forward(), 100000, 1, "x-many");
    if (asked("big")) return aliased(hf_http_forward(), 2, 40 << 10, "x-big");
    if (asked("fill")) return filling();
    if (asked("removes")) {
        hf_http_verdict verdict = hf_http_forward();
        for (int i = 0; i < 101; i++) hf_http_remove_header(&verdict, "x-gone");
        return verdict;
    }
    if (asked("ctrl")) return setting("x-ctrl", "a\x01" "b");
    if (asked("del")) return setting("x-ctrl", "a\x7f");
    if (asked("escape")) return setting("x-ctrl", "\x1b[31mred");
    if (asked("upper")) return setting("X-Upper", "1");
    if (asked("content-length")) return setting("content-length", "1");
    if (asked("transfer-encoding")) return setting("transfer-encoding", "chunked");
    if (asked("connection")) return setting("connection", "close");
    if (asked("envoy")) return setting("x-envoy-original-path", "/admin");
    if (asked("path")) return setting(":path", "/rewritten");
    if (asked("authority")) return setting(":authority", "elsewhere.example");
    if (asked("host")) return setting("host", "elsewhere.example");
    if (asked("method")) return setting(":method", "DELETE");
    if (asked("scheme")) return setting(":scheme", "https");
    if (asked("remove-host")) return removing("host");
    if (asked("remove-path")) return removing(":path");
    if (asked("204-body")) return hf_http_respond(204, "surprise", 8);
    if (asked("304-body")) return hf_http_respond(304, "surprise", 8);
    if (asked("204")) return hf_http_respond(204, "", 0);
    if (asked("respond-content-length")) {
        hf_http_verdict verdict = hf_http_respond(200, "hello", 5);
        hf_http_set_header(&verdict, "content-length", "1", 1);
        return verdict;
    }
    if (wanted_len > 9 && memcmp(wanted, "response-", 9) == 0) return hf_http_forward();
    return setting("x-hostile", "ok");
}

static hf_http_verdict response_verdict(void) {
    if (asked("response-content-length")) return setting("content-length", "1");
    if (asked("response-path")) return setting(":path", "/rewritten");
    if (asked("response-status")) return setting(":status", "200");
    return hf_http_forward();
}

hf_http_verdict hf_http_headers(hf_direction direction, hf_fields headers, bool eos) {
    (void)eos;
    if (direction == HF_OUTBOUND) return response_verdict();
    const hf_field *header = hf_header(headers, "x-verdict");
    wanted_len = 0;
    if (header && header->value.len <= sizeof wanted) {
        memcpy(wanted, header->value.ptr, header->value.len);
        wanted_len = header->value.len;
    }
    return request_verdict();
}

hf_tcp_verdict hf_tcp_data(hf_direction direction, hf_bytes data, bool eos) {
    (void)direction; (void)eos;
    if (data.len == 12 && memcmp(data.ptr, "huge-replace", 12) == 0)  /* nothing behind it */
        return (hf_tcp_verdict){HF_REPLACE, {(const uint8_t *)0, 900u << 20}};
    if (data.len == 11 && memcmp(data.ptr, "big-replace", 11) == 0) {
        uint8_t *bytes = hf_alloc(2 << 20);
        memset(bytes, 'b', 2 << 20);
        return (hf_tcp_verdict){HF_REPLACE, {bytes, 2 << 20}};
    }
    return hf_forward();
}
