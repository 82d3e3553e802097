/*
 * hyperfilter.h: write a hyperfilter plugin in C (or Zig, through @cImport) as a plain core
 * WebAssembly module. hyperfilter.c implements the canonical-ABI lowering of the world in
 * plugins/wit/hyperfilter.wit; a plugin only defines the hooks it needs.
 *
 * Build:  python -m ziglang cc --target=wasm32-freestanding -O2 -nostdlib -Wl,--no-entry \
 *             -I plugins/sdk/c plugin.c plugins/sdk/c/hyperfilter.c -o plugin.wasm
 * (`hyperfilter plugin build DIR` does this.)
 *
 * Memory: everything the host hands a hook, and everything allocated with hf_alloc(), lives
 * in an arena that is emptied when the next event begins. Keep state across events in static
 * storage.
 * Event arguments mostly arrive in a buffer this module lends the host (`hyperfilter_input`,
 * an extension of the canonical ABI that saves a cabi_realloc call per string and list).
 */
#ifndef HYPERFILTER_H
#define HYPERFILTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- data the host passes in ---------------------------------------------------------- */

typedef struct { const uint8_t *ptr; size_t len; } hf_bytes;
typedef struct { const char *ptr; size_t len; } hf_string;
typedef struct { hf_string name; hf_bytes value; } hf_field;   /* lower-case name */
typedef struct { const hf_field *ptr; size_t len; } hf_fields;
typedef struct { hf_string key; hf_string value; } hf_metadata_entry;

typedef struct {
    hf_string source_address;        /* "ip:port", empty when Envoy does not send it */
    hf_string destination_address;
    hf_string server_name;           /* the TLS SNI the client asked for; empty when unknown */
    const hf_metadata_entry *metadata; /* the Envoy stream's gRPC metadata */
    size_t metadata_len;
} hf_stream_info;

typedef enum { HF_INBOUND = 0, HF_OUTBOUND = 1 } hf_direction;

/* ---- TCP verdicts ------------------------------------------------------------------------ */

typedef enum {
    HF_FORWARD = 0, HF_REPLACE = 1, HF_CLOSE = 2, HF_RESET = 3, HF_ANSWER = 4, HF_ANSWER_AND_CLOSE = 5
} hf_tcp_action;
typedef struct { hf_tcp_action action; hf_bytes data; } hf_tcp_verdict;

static inline hf_tcp_verdict hf_forward(void) { return (hf_tcp_verdict){HF_FORWARD, {0, 0}}; }
static inline hf_tcp_verdict hf_close(void) { return (hf_tcp_verdict){HF_CLOSE, {0, 0}}; }
static inline hf_tcp_verdict hf_reset(void) { return (hf_tcp_verdict){HF_RESET, {0, 0}}; }
/* Pass `data` instead of the bytes received (copied into the event arena). */
hf_tcp_verdict hf_replace(const void *data, size_t len);
/* Drop the bytes received and send `data` toward the client; the connection stays open.
 * From hf_tcp_open: sent to the client before anything else (a banner). */
hf_tcp_verdict hf_answer(const void *data, size_t len);
/* Drop the bytes received, send `data` toward the client, then close the connection (FIN). */
hf_tcp_verdict hf_answer_and_close(const void *data, size_t len);

/* ---- HTTP verdicts ----------------------------------------------------------------------- */

typedef struct {
    bool respond;                      /* false: forward with the mutation below */
    uint16_t status;                   /* respond: the status code */
    hf_field *headers;                 /* forward: headers to set; respond: response headers */
    size_t headers_len, headers_cap;
    hf_string *removes;                /* forward: headers to remove */
    size_t removes_len, removes_cap;
    bool has_body;                     /* forward: replace the body (or chunk) */
    hf_bytes body;
} hf_http_verdict;

hf_http_verdict hf_http_forward(void);
hf_http_verdict hf_http_respond(uint16_t status, const void *body, size_t len);
void hf_http_set_header(hf_http_verdict *verdict, const char *name, const void *value, size_t len);
void hf_http_remove_header(hf_http_verdict *verdict, const char *name);
void hf_http_set_body(hf_http_verdict *verdict, const void *body, size_t len);

/* ---- hooks: define the ones the manifest's events name; the others forward ------------- */

hf_tcp_verdict hf_tcp_open(const hf_stream_info *info);
hf_tcp_verdict hf_tcp_data(hf_direction direction, hf_bytes data, bool end_of_stream);
void hf_tcp_close(void);
hf_http_verdict hf_http_open(const hf_stream_info *info);
hf_http_verdict hf_http_headers(hf_direction direction, hf_fields headers, bool end_of_stream);
hf_http_verdict hf_http_body(hf_direction direction, hf_bytes body, bool end_of_stream);
hf_http_verdict hf_http_trailers(hf_direction direction, hf_fields trailers);

/* ---- helpers ----------------------------------------------------------------------------- */

void *hf_alloc(size_t size);  /* event arena, 8-byte aligned; traps when memory runs out */
/* First occurrence of `needle` in `haystack`, or -1. */
long hf_find(const void *haystack, size_t haystack_len, const void *needle, size_t needle_len);
/* The header `name` (lower-case) in `headers`, or NULL. */
const hf_field *hf_header(hf_fields headers, const char *name);
bool hf_equals(hf_string s, const char *text);

size_t strlen(const char *s);
void *memcpy(void *dst, const void *src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);

/* ---- capabilities: using one makes the module import it; the manifest must grant it ----- */

typedef enum { HF_DEBUG = 0, HF_INFO = 1, HF_WARN = 2, HF_ERROR = 3 } hf_log_level;
void hf_log(hf_log_level level, const char *message);                       /* log */
bool hf_config_get(const char *key, hf_string *value);                      /* config */
uint64_t hf_clock_now(void);                                                 /* clock */
uint64_t hf_clock_monotonic(void);                                           /* clock */
hf_bytes hf_random_bytes(uint32_t len);                                      /* random */
void hf_metric_add(const char *name, uint64_t delta);                       /* metrics */
void hf_metric_set(const char *name, int64_t value);                        /* metrics */

typedef enum { HF_STATE_OK = 0, HF_STATE_QUOTA_EXCEEDED = 1, HF_STATE_NOT_A_NUMBER = 2 } hf_state_status;
bool hf_state_get(const char *key, hf_bytes *value);                        /* shared-state */
hf_state_status hf_state_set(const char *key, const void *value, size_t len, uint32_t ttl_ms);
void hf_state_delete(const char *key);
hf_state_status hf_state_increment(const char *key, int64_t delta, uint32_t ttl_ms, int64_t *total);

#endif
