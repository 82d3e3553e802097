/* The pass-through contender on Envoy's own Wasm filter (proxy-wasm ABI 0.2.1): what users run
 * today without isolation. Same logic as plugins/examples/pass-through: every chunk and every
 * header map is read into the module (as hyperfilter hands them to its plugins), then
 * forwarded unchanged. Built with zig cc by the benchmark. */
#include <stdint.h>

#define EXPORT(name) __attribute__((export_name(name)))
#define IMPORT(name) __attribute__((import_module("env"), import_name(name)))

enum { CONTINUE = 0 };
enum { REQUEST_BODY = 0, RESPONSE_BODY = 1, DOWNSTREAM_DATA = 2, UPSTREAM_DATA = 3 };
enum { REQUEST_HEADERS = 0, RESPONSE_HEADERS = 2 };

IMPORT("proxy_get_buffer_bytes")
int32_t proxy_get_buffer_bytes(int32_t type, int32_t start, int32_t length, uint8_t **data,
                               uint32_t *size);
IMPORT("proxy_get_header_map_pairs")
int32_t proxy_get_header_map_pairs(int32_t type, uint8_t **data, uint32_t *size);

/* The host allocates in the module for what it returns; one callback's worth at a time. */
extern unsigned char __heap_base;
static uintptr_t top;

EXPORT("proxy_on_memory_allocate") void *allocate(uint32_t size) {
    if (!top) top = (uintptr_t)&__heap_base;
    uintptr_t ptr = (top + 7) & ~(uintptr_t)7;
    uintptr_t end = (uintptr_t)__builtin_wasm_memory_size(0) * 65536;
    if (ptr + size > end &&
        __builtin_wasm_memory_grow(0, (ptr + size - end + 65535) / 65536) == (uintptr_t)-1)
        __builtin_trap();
    top = ptr + size;
    return (void *)ptr;
}
EXPORT("malloc") void *legacy_malloc(uint32_t size) { return allocate(size); }

static volatile uint32_t seen;  /* keeps the reads from being optimized away */

static int32_t read_buffer(int32_t type, uint32_t length) {
    uint8_t *data = 0;
    uint32_t size = 0;
    top = 0;
    if (length && proxy_get_buffer_bytes(type, 0, (int32_t)length, &data, &size) == 0)
        seen += size ? data[size - 1] : 0;
    return CONTINUE;
}

static int32_t read_headers(int32_t type) {
    uint8_t *data = 0;
    uint32_t size = 0;
    top = 0;
    if (proxy_get_header_map_pairs(type, &data, &size) == 0) seen += size;
    return CONTINUE;
}

EXPORT("proxy_abi_version_0_2_1") void abi_version(void) {}
EXPORT("proxy_on_vm_start") uint32_t on_vm_start(uint32_t root, uint32_t size) { return 1; }
EXPORT("proxy_on_configure") uint32_t on_configure(uint32_t root, uint32_t size) { return 1; }
EXPORT("proxy_on_context_create") void on_context_create(uint32_t id, uint32_t root) {}
EXPORT("proxy_on_new_connection") int32_t on_new_connection(uint32_t id) { return CONTINUE; }
EXPORT("proxy_on_downstream_data")
int32_t on_downstream_data(uint32_t id, uint32_t length, uint32_t eos) {
    return read_buffer(DOWNSTREAM_DATA, length);
}
EXPORT("proxy_on_upstream_data")
int32_t on_upstream_data(uint32_t id, uint32_t length, uint32_t eos) {
    return read_buffer(UPSTREAM_DATA, length);
}
EXPORT("proxy_on_downstream_connection_close") void on_downstream_close(uint32_t id, uint32_t t) {}
EXPORT("proxy_on_upstream_connection_close") void on_upstream_close(uint32_t id, uint32_t t) {}
EXPORT("proxy_on_request_headers")
int32_t on_request_headers(uint32_t id, uint32_t count, uint32_t eos) {
    return read_headers(REQUEST_HEADERS);
}
EXPORT("proxy_on_request_body")
int32_t on_request_body(uint32_t id, uint32_t length, uint32_t eos) {
    return read_buffer(REQUEST_BODY, length);
}
EXPORT("proxy_on_response_headers")
int32_t on_response_headers(uint32_t id, uint32_t count, uint32_t eos) {
    return read_headers(RESPONSE_HEADERS);
}
EXPORT("proxy_on_response_body")
int32_t on_response_body(uint32_t id, uint32_t length, uint32_t eos) {
    return read_buffer(RESPONSE_BODY, length);
}
EXPORT("proxy_on_done") uint32_t on_done(uint32_t id) { return 1; }
EXPORT("proxy_on_log") void on_log(uint32_t id) {}
EXPORT("proxy_on_delete") void on_delete(uint32_t id) {}
