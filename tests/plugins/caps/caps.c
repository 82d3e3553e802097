#include "hyperfilter.h"

static bool starts(hf_bytes data, const char *prefix) {
    size_t n = strlen(prefix);
    return data.len >= n && memcmp(data.ptr, prefix, n) == 0;
}

/* The argument after the command, as a NUL-terminated string in the arena. */
static char *argument(hf_bytes data, size_t skip) {
    size_t n = data.len > skip ? data.len - skip : 0;
    while (n && (data.ptr[skip + n - 1] == '\n' || data.ptr[skip + n - 1] == '\r')) n--;
    char *text = hf_alloc(n + 1);
    memcpy(text, data.ptr + skip, n);
    text[n] = 0;
    return text;
}

static size_t decimal(char *out, int64_t value) {
    char digits[24];
    size_t len = 0;
    bool negative = value < 0;
    uint64_t v = negative ? (uint64_t)(-value) : (uint64_t)value;
    do { digits[len++] = (char)('0' + v % 10); v /= 10; } while (v);
    size_t at = 0;
    if (negative) out[at++] = '-';
    while (len) out[at++] = digits[--len];
    return at;
}

static hf_tcp_verdict text(const char *s) { return hf_replace(s, strlen(s)); }

hf_tcp_verdict hf_tcp_data(hf_direction direction, hf_bytes data, bool eos) {
    (void)eos;
    if (direction != HF_INBOUND || data.len == 0) return hf_forward();
    if (starts(data, "config ")) {
        hf_string value;
        return hf_config_get(argument(data, 7), &value) ? hf_replace(value.ptr, value.len) : text("none");
    }
    if (starts(data, "clock")) {
        uint64_t wall = hf_clock_now(), first = hf_clock_monotonic(), second = hf_clock_monotonic();
        return text(wall > 1600000000ull * 1000000000ull && second >= first ? "ok" : "bad");
    }
    if (starts(data, "random ")) {
        char *arg = argument(data, 7);
        uint32_t n = 0;
        while (*arg >= '0' && *arg <= '9') n = n * 10 + (uint32_t)(*arg++ - '0');
        hf_bytes bytes = hf_random_bytes(n);
        char *hex = hf_alloc(bytes.len * 2 + 1);
        for (size_t i = 0; i < bytes.len; i++) {
            hex[2 * i] = "0123456789abcdef"[bytes.ptr[i] >> 4];
            hex[2 * i + 1] = "0123456789abcdef"[bytes.ptr[i] & 15];
        }
        return hf_replace(hex, bytes.len * 2);
    }
    if (starts(data, "count ")) {
        int64_t total = 0;
        if (hf_state_increment(argument(data, 6), 1, 0, &total) != HF_STATE_OK) return text("quota");
        char out[24];
        return hf_replace(out, decimal(out, total));
    }
    if (starts(data, "get ")) {
        hf_bytes value;
        return hf_state_get(argument(data, 4), &value) ? hf_replace(value.ptr, value.len) : text("none");
    }
    if (starts(data, "set ")) {
        char *arg = argument(data, 4);
        char *space = arg;
        while (*space && *space != ' ') space++;
        if (!*space) return text("usage");
        *space = 0;
        return text(hf_state_set(arg, space + 1, strlen(space + 1), 0) == HF_STATE_OK ? "ok" : "quota");
    }
    if (starts(data, "del ")) { hf_state_delete(argument(data, 4)); return text("ok"); }
    if (starts(data, "metric")) { hf_metric_add("hits", 1); hf_metric_set("level", -7); return text("ok"); }
    if (starts(data, "badmetric")) { hf_metric_add("undeclared", 1); return text("ok"); }
    if (starts(data, "log")) { hf_log(HF_INFO, "caps plugin says hello\nforged line"); return text("ok"); }
    return hf_forward();
}
