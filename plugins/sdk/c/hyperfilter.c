/*
 * hyperfilter.c: the canonical-ABI lowering of the hyperfilter world for C plugins.
 *
 * Layouts follow the component model's canonical ABI for wasm32 (pointers and lengths are
 * 4 bytes); the comments name each offset so they can be checked against the WIT.
 */
#include "hyperfilter.h"

#define HF_EXPORT(name) __attribute__((export_name(name)))
#define HF_IMPORT(iface, name) \
    __attribute__((import_module("hyperfilter:plugin/" iface "@0.1.0"), import_name(name)))
#define HF_WEAK __attribute__((weak))

/* ---- freestanding libc pieces the compiler may call --------------------------------------- */

void *memcpy(void *dst, const void *src, size_t n) { __builtin_memmove(dst, src, n); return dst; }
void *memmove(void *dst, const void *src, size_t n) { __builtin_memmove(dst, src, n); return dst; }
void *memset(void *dst, int c, size_t n) { __builtin_memset(dst, c, n); return dst; }

int memcmp(const void *a, const void *b, size_t n) {
    const volatile uint8_t *x = a, *y = b;  /* volatile: keep the loop a loop */
    for (size_t i = 0; i < n; i++)
        if (x[i] != y[i]) return x[i] < y[i] ? -1 : 1;
    return 0;
}

size_t strlen(const char *s) {
    const volatile char *p = s;
    while (*p) p++;
    return (size_t)(p - s);
}

/* ---- the event arena: a bump allocator over the memory past the data and stack ----------- */

extern unsigned char __heap_base;
static uintptr_t arena_start, arena_top, arena_end;

static void *arena_alloc(size_t size, size_t align) {
    if (arena_start == 0) {
        arena_start = arena_top = (uintptr_t)&__heap_base;
        arena_end = __builtin_wasm_memory_size(0) * 65536;
    }
    uintptr_t ptr = (arena_top + align - 1) & ~(uintptr_t)(align - 1);
    if (ptr + size > arena_end) {
        size_t pages = (ptr + size - arena_end + 65535) / 65536;
        if (__builtin_wasm_memory_grow(0, pages) == (size_t)-1) __builtin_trap();
        arena_end += pages * 65536;
    }
    arena_top = ptr + size;
    return (void *)ptr;
}

void *hf_alloc(size_t size) { return arena_alloc(size, 8); }

static void arena_reset(void) { arena_top = arena_start; }

/* A verdict lives in the arena until the host has read it, that is until the next event
 * begins: its first argument allocated through cabi_realloc, or its handler called. Released
 * then, rather than by exporting cabi_post_* functions, it costs the host no call after each
 * event. (Host functions answering during a handler allocate here too; nothing is pending
 * then.) */
static int verdict_pending;

static void next_event(void) {
    if (verdict_pending) {
        arena_reset();
        verdict_pending = 0;
    }
}

static uint8_t *verdict_out(uint8_t *lowered) {
    verdict_pending = 1;
    return lowered;
}

HF_EXPORT("cabi_realloc")
void *cabi_realloc(void *old, size_t old_size, size_t align, size_t new_size) {
    next_event();
    void *ptr = arena_alloc(new_size, align);
    if (old && old_size) memcpy(ptr, old, old_size < new_size ? old_size : new_size);
    return ptr;
}

/* The input area: the host lays each event's arguments out here instead of calling
 * cabi_realloc for every string and list. This module never frees argument memory (it only
 * ever resets its arena), so it can lend the host a buffer; what does not fit still comes
 * through cabi_realloc. Exported by address (`-Wl,--export=hyperfilter_input`). */
#ifndef HF_INPUT_CAPACITY
#define HF_INPUT_CAPACITY (64 * 1024)
#endif
static uint8_t input_bytes[HF_INPUT_CAPACITY] __attribute__((aligned(8)));
__attribute__((used)) struct { uint32_t capacity; uint8_t *bytes; } hyperfilter_input = {
    HF_INPUT_CAPACITY, input_bytes};

static void *copy_to_arena(const void *data, size_t len) {
    void *ptr = arena_alloc(len ? len : 1, 1);
    memcpy(ptr, data, len);
    return ptr;
}

/* ---- verdict builders -------------------------------------------------------------------- */

static hf_tcp_verdict with_bytes(hf_tcp_action action, const void *data, size_t len) {
    return (hf_tcp_verdict){action, {copy_to_arena(data, len), len}};
}

hf_tcp_verdict hf_replace(const void *data, size_t len) { return with_bytes(HF_REPLACE, data, len); }
hf_tcp_verdict hf_answer(const void *data, size_t len) { return with_bytes(HF_ANSWER, data, len); }
hf_tcp_verdict hf_answer_and_close(const void *data, size_t len) {
    return with_bytes(HF_ANSWER_AND_CLOSE, data, len);
}

hf_http_verdict hf_http_forward(void) { return (hf_http_verdict){0}; }

hf_http_verdict hf_http_respond(uint16_t status, const void *body, size_t len) {
    hf_http_verdict verdict = {0};
    verdict.respond = true;
    verdict.status = status;
    verdict.body = (hf_bytes){copy_to_arena(body, len), len};
    return verdict;
}

static void *grow(void *items, size_t len, size_t *cap, size_t item_size) {
    if (len < *cap) return items;
    size_t new_cap = *cap ? *cap * 2 : 8;
    void *bigger = arena_alloc(new_cap * item_size, 4);
    if (items) memcpy(bigger, items, len * item_size);
    *cap = new_cap;
    return bigger;
}

static hf_string arena_string(const char *text) {
    size_t len = strlen(text);
    return (hf_string){copy_to_arena(text, len), len};
}

void hf_http_set_header(hf_http_verdict *v, const char *name, const void *value, size_t len) {
    v->headers = grow(v->headers, v->headers_len, &v->headers_cap, sizeof(hf_field));
    v->headers[v->headers_len++] = (hf_field){arena_string(name), {copy_to_arena(value, len), len}};
}

void hf_http_remove_header(hf_http_verdict *v, const char *name) {
    v->removes = grow(v->removes, v->removes_len, &v->removes_cap, sizeof(hf_string));
    v->removes[v->removes_len++] = arena_string(name);
}

void hf_http_set_body(hf_http_verdict *v, const void *body, size_t len) {
    v->has_body = true;
    v->body = (hf_bytes){copy_to_arena(body, len), len};
}

/* ---- helpers ----------------------------------------------------------------------------- */

long hf_find(const void *haystack, size_t haystack_len, const void *needle, size_t needle_len) {
    const uint8_t *h = haystack;
    if (needle_len == 0) return 0;
    for (size_t i = 0; i + needle_len <= haystack_len; i++)
        if (h[i] == *(const uint8_t *)needle && memcmp(h + i, needle, needle_len) == 0) return (long)i;
    return -1;
}

bool hf_equals(hf_string s, const char *text) {
    size_t len = strlen(text);
    return s.len == len && memcmp(s.ptr, text, len) == 0;
}

const hf_field *hf_header(hf_fields headers, const char *name) {
    for (size_t i = 0; i < headers.len; i++)
        if (hf_equals(headers.ptr[i].name, name)) return &headers.ptr[i];
    return 0;
}

/* ---- default hooks: forward everything ---------------------------------------------------- */

HF_WEAK hf_tcp_verdict hf_tcp_open(const hf_stream_info *info) { (void)info; return hf_forward(); }
HF_WEAK hf_tcp_verdict hf_tcp_data(hf_direction d, hf_bytes data, bool eos) {
    (void)d; (void)data; (void)eos; return hf_forward();
}
HF_WEAK void hf_tcp_close(void) {}
HF_WEAK hf_http_verdict hf_http_open(const hf_stream_info *info) { (void)info; return hf_http_forward(); }
HF_WEAK hf_http_verdict hf_http_headers(hf_direction d, hf_fields headers, bool eos) {
    (void)d; (void)headers; (void)eos; return hf_http_forward();
}
HF_WEAK hf_http_verdict hf_http_body(hf_direction d, hf_bytes body, bool eos) {
    (void)d; (void)body; (void)eos; return hf_http_forward();
}
HF_WEAK hf_http_verdict hf_http_trailers(hf_direction d, hf_fields trailers) {
    (void)d; (void)trailers; return hf_http_forward();
}

/* ---- exports: lift the arguments, call the hook, lower the verdict ------------------------ */

static uint8_t ret_area[32] __attribute__((aligned(8)));

static void put32(size_t offset, uint32_t value) { memcpy(ret_area + offset, &value, 4); }

/* tcp-verdict: tag u8 @0; replace, answer, answer-and-close: list<u8> ptr @4, len @8. */
static uint8_t *lower_tcp(hf_tcp_verdict v) {
    ret_area[0] = (uint8_t)v.action;
    put32(4, (uint32_t)(uintptr_t)v.data.ptr);
    put32(8, (uint32_t)v.data.len);
    return ret_area;
}

/* http-verdict: tag u8 @0, payload @4.
 * forward(mutation): set-headers @4/@8, remove-headers @12/@16, body option tag @20, @24/@28.
 * respond(immediate-response): status u16 @4, headers @8/@12, body @16/@20. */
static uint8_t *lower_http(hf_http_verdict v) {
    memset(ret_area, 0, sizeof ret_area);
    if (v.respond) {
        ret_area[0] = 1;
        memcpy(ret_area + 4, &v.status, 2);
        put32(8, (uint32_t)(uintptr_t)v.headers);
        put32(12, (uint32_t)v.headers_len);
        put32(16, (uint32_t)(uintptr_t)v.body.ptr);
        put32(20, (uint32_t)v.body.len);
    } else {
        put32(4, (uint32_t)(uintptr_t)v.headers);
        put32(8, (uint32_t)v.headers_len);
        put32(12, (uint32_t)(uintptr_t)v.removes);
        put32(16, (uint32_t)v.removes_len);
        ret_area[20] = v.has_body;
        put32(24, (uint32_t)(uintptr_t)v.body.ptr);
        put32(28, (uint32_t)v.body.len);
    }
    return ret_area;
}

static hf_stream_info stream_info(const char *src, size_t src_len, const char *dst, size_t dst_len,
                                  const char *sni, size_t sni_len,
                                  const hf_metadata_entry *md, size_t md_len) {
    return (hf_stream_info){{src, src_len}, {dst, dst_len}, {sni, sni_len}, md, md_len};
}

#define TCP "hyperfilter:plugin/tcp-filter@0.1.0#"
#define HTTP "hyperfilter:plugin/http-filter@0.1.0#"

HF_EXPORT(TCP "on-open")
uint8_t *hf__tcp_open(const char *src, size_t src_len, const char *dst, size_t dst_len,
                      const char *sni, size_t sni_len,
                      const hf_metadata_entry *md, size_t md_len) {
    next_event();
    hf_stream_info info = stream_info(src, src_len, dst, dst_len, sni, sni_len, md, md_len);
    return verdict_out(lower_tcp(hf_tcp_open(&info)));
}

HF_EXPORT(TCP "on-data")
uint8_t *hf__tcp_data(int32_t direction, const uint8_t *data, size_t len, int32_t eos) {
    next_event();
    return verdict_out(lower_tcp(hf_tcp_data((hf_direction)direction, (hf_bytes){data, len},
                                             eos != 0)));
}

HF_EXPORT(TCP "on-close") void hf__tcp_close(void) {
    next_event();
    hf_tcp_close();
    arena_reset();
}

HF_EXPORT(HTTP "on-open")
uint8_t *hf__http_open(const char *src, size_t src_len, const char *dst, size_t dst_len,
                       const char *sni, size_t sni_len,
                       const hf_metadata_entry *md, size_t md_len) {
    next_event();
    hf_stream_info info = stream_info(src, src_len, dst, dst_len, sni, sni_len, md, md_len);
    return verdict_out(lower_http(hf_http_open(&info)));
}

HF_EXPORT(HTTP "on-headers")
uint8_t *hf__http_headers(int32_t direction, const hf_field *fields, size_t len, int32_t eos) {
    next_event();
    return verdict_out(lower_http(hf_http_headers((hf_direction)direction,
                                                  (hf_fields){fields, len}, eos != 0)));
}

HF_EXPORT(HTTP "on-body")
uint8_t *hf__http_body(int32_t direction, const uint8_t *body, size_t len, int32_t eos) {
    next_event();
    return verdict_out(lower_http(hf_http_body((hf_direction)direction, (hf_bytes){body, len},
                                               eos != 0)));
}

HF_EXPORT(HTTP "on-trailers")
uint8_t *hf__http_trailers(int32_t direction, const hf_field *fields, size_t len) {
    next_event();
    return verdict_out(lower_http(hf_http_trailers((hf_direction)direction,
                                                   (hf_fields){fields, len})));
}

/* ---- capability imports ------------------------------------------------------------------- */

HF_IMPORT("log", "log") void hf__log(int32_t level, const char *ptr, size_t len);
void hf_log(hf_log_level level, const char *message) { hf__log((int32_t)level, message, strlen(message)); }

/* option<string> and option<list<u8>>: tag u8 @0, ptr @4, len @8 */
static bool lift_option(const uint32_t ret[3], const void **ptr, size_t *len) {
    if (!(ret[0] & 0xff)) return false;
    *ptr = (const void *)(uintptr_t)ret[1];
    *len = ret[2];
    return true;
}

HF_IMPORT("config", "get") void hf__config_get(const char *key, size_t len, uint8_t *ret);
bool hf_config_get(const char *key, hf_string *value) {
    uint32_t ret[3];
    hf__config_get(key, strlen(key), (uint8_t *)ret);
    return lift_option(ret, (const void **)&value->ptr, &value->len);
}

HF_IMPORT("clock", "now") uint64_t hf__clock_now(void);
HF_IMPORT("clock", "monotonic") uint64_t hf__clock_monotonic(void);
uint64_t hf_clock_now(void) { return hf__clock_now(); }
uint64_t hf_clock_monotonic(void) { return hf__clock_monotonic(); }

/* list<u8>: ptr @0, len @4 */
HF_IMPORT("random", "get-bytes") void hf__random_bytes(uint32_t len, uint8_t *ret);
hf_bytes hf_random_bytes(uint32_t len) {
    uint32_t ret[2];
    hf__random_bytes(len, (uint8_t *)ret);
    return (hf_bytes){(const uint8_t *)(uintptr_t)ret[0], ret[1]};
}

HF_IMPORT("metrics", "add") void hf__metric_add(const char *name, size_t len, uint64_t delta);
HF_IMPORT("metrics", "set") void hf__metric_set(const char *name, size_t len, int64_t value);
void hf_metric_add(const char *name, uint64_t delta) { hf__metric_add(name, strlen(name), delta); }
void hf_metric_set(const char *name, int64_t value) { hf__metric_set(name, strlen(name), value); }

HF_IMPORT("shared-state", "get") void hf__state_get(const char *key, size_t len, uint8_t *ret);
bool hf_state_get(const char *key, hf_bytes *value) {
    uint32_t ret[3];
    hf__state_get(key, strlen(key), (uint8_t *)ret);
    return lift_option(ret, (const void **)&value->ptr, &value->len);
}

/* result<_, state-error>: tag u8 @0, error u8 @1 */
HF_IMPORT("shared-state", "set")
void hf__state_set(const char *key, size_t key_len, const void *value, size_t len, uint32_t ttl, uint8_t *ret);
hf_state_status hf_state_set(const char *key, const void *value, size_t len, uint32_t ttl_ms) {
    uint8_t ret[2];
    hf__state_set(key, strlen(key), value, len, ttl_ms, ret);
    return ret[0] ? (hf_state_status)(ret[1] + 1) : HF_STATE_OK;
}

HF_IMPORT("shared-state", "delete") void hf__state_delete(const char *key, size_t len);
void hf_state_delete(const char *key) { hf__state_delete(key, strlen(key)); }

/* result<s64, state-error>: tag u8 @0, payload @8 (s64, or the error as u8) */
HF_IMPORT("shared-state", "increment")
void hf__state_increment(const char *key, size_t len, int64_t delta, uint32_t ttl, uint8_t *ret);
hf_state_status hf_state_increment(const char *key, int64_t delta, uint32_t ttl_ms, int64_t *total) {
    uint64_t ret[2];
    hf__state_increment(key, strlen(key), delta, ttl_ms, (uint8_t *)ret);
    if (ret[0] & 0xff) return (hf_state_status)((ret[1] & 0xff) + 1);
    *total = (int64_t)ret[1];
    return HF_STATE_OK;
}
