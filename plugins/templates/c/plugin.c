/* ${name}: a hyperfilter plugin (a core module built with zig cc). See hyperfilter.h. */
#include "hyperfilter.h"

hf_tcp_verdict hf_tcp_data(hf_direction direction, hf_bytes data, bool end_of_stream) {
    (void)end_of_stream;
    if (direction == HF_INBOUND && hf_find(data.ptr, data.len, "forbidden", 9) >= 0) {
        hf_log(HF_WARN, "closing a connection");
        return hf_close();
    }
    return hf_forward();
}

hf_http_verdict hf_http_headers(hf_direction direction, hf_fields headers, bool end_of_stream) {
    (void)end_of_stream;
    if (direction == HF_INBOUND && hf_header(headers, "x-block"))
        return hf_http_respond(403, "blocked\n", 8);
    hf_http_verdict verdict = hf_http_forward();
    hf_http_set_header(&verdict, "x-greeting", "hello", 5);
    return verdict;
}
