/* A fixed-window rate limit per client, counted with shared-state's atomic increment: the
 * first request of a window creates the client's counter with the window as its time to
 * live, later ones add to it until it expires. */
#include "hyperfilter.h"

#define MAX_KEY_VALUE 128  /* bytes of the key header that name a client */

static uint64_t limit, window_ms;
static hf_string key_header;
static bool configured;

static uint64_t number(const char *key, uint64_t fallback) {
    hf_string text;
    uint64_t value = 0;
    if (!hf_config_get(key, &text) || text.len == 0) return fallback;
    for (size_t i = 0; i < text.len; i++) {
        if (text.ptr[i] < '0' || text.ptr[i] > '9' || value > 100000000000ull) {
            hf_log(HF_ERROR, "config `limit` and `window-ms` must be whole numbers");
            __builtin_trap();
        }
        value = value * 10 + (uint64_t)(text.ptr[i] - '0');
    }
    return value;
}

static void configure(void) {
    if (configured) return;
    configured = true;
    limit = number("limit", 100);
    window_ms = number("window-ms", 1000);
    if (window_ms == 0 || window_ms > UINT32_MAX) {
        hf_log(HF_ERROR, "config `window-ms` must be 1 to 4294967295");
        __builtin_trap();
    }
    if (!hf_config_get("key-header", &key_header)) key_header.len = 0;
}

/* "rl:" and the client's header value in hex: a key is a string, a header value any bytes.
 * Values past MAX_KEY_VALUE bytes share their prefix's count. */
static const char *client_key(hf_fields headers) {
    static const char hex[] = "0123456789abcdef";
    char *key = hf_alloc(4 + 2 * MAX_KEY_VALUE), *out = key;
    memcpy(out, "rl:", 3);
    out += 3;
    if (key_header.len) {
        char *name = hf_alloc(key_header.len + 1);
        memcpy(name, key_header.ptr, key_header.len);
        name[key_header.len] = 0;
        const hf_field *field = hf_header(headers, name);
        size_t len = field ? field->value.len : 0;
        if (len > MAX_KEY_VALUE) len = MAX_KEY_VALUE;
        for (size_t i = 0; i < len; i++) {
            *out++ = hex[field->value.ptr[i] >> 4];
            *out++ = hex[field->value.ptr[i] & 15];
        }
    }
    *out = 0;
    return key;
}

static size_t decimal(char *out, uint64_t n) {
    char digits[20];
    size_t len = 0;
    do { digits[len++] = (char)('0' + n % 10); n /= 10; } while (n);
    for (size_t i = 0; i < len; i++) out[i] = digits[len - 1 - i];
    return len;
}

static hf_http_verdict too_many(void) {
    static const char body[] = "rate limit exceeded\n";
    char seconds[20];
    hf_metric_add("limited", 1);
    hf_http_verdict verdict = hf_http_respond(429, body, sizeof body - 1);
    hf_http_set_header(&verdict, "content-type", "text/plain", 10);
    hf_http_set_header(&verdict, "retry-after", seconds, decimal(seconds, (window_ms + 999) / 1000));
    return verdict;
}

hf_http_verdict hf_http_headers(hf_direction direction, hf_fields headers, bool end_of_stream) {
    (void)end_of_stream;
    if (direction != HF_INBOUND) return hf_http_forward();
    configure();
    int64_t count;
    if (hf_state_increment(client_key(headers), 1, (uint32_t)window_ms, &count) != HF_STATE_OK) {
        hf_log(HF_WARN, "cannot count this client (shared-state quota): answering 429");
        return too_many();
    }
    return (uint64_t)count > limit ? too_many() : hf_http_forward();
}
