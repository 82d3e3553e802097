/* Refuses configured Redis commands. The client's bytes are followed as Redis's own reader
 * (networking.c) takes them: a command starting with '*' is a RESP array of bulk strings
 * ("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"), anything else an inline command ending at '\n'. The
 * parser is a byte-at-a-time state machine kept in static memory, so a command split across
 * data events anywhere is seen whole. A refused command's name is complete in the event that
 * closes the connection, so Redis never receives the whole command. */
#include "hyperfilter.h"

#define MAX_COMMANDS 64
#define MAX_NAME 32                       /* longer names are no command this plugin refuses */
#define MAX_NUMBER_LINE 20                /* "-9223372036854775808" */
#define MAX_BULK_LENGTH (512ll << 20)     /* Redis's proto-max-bulk-len default */
#define MAX_ARRAY_LENGTH 2147483647ll     /* Redis refuses more (INT_MAX) */

typedef enum {
    COMMAND_START,  /* '*' starts an array, anything else an inline command */
    COUNT_LINE,     /* the array's length, up to '\r' */
    ELEMENT_START,  /* '$' */
    LENGTH_LINE,    /* the bulk string's length, up to '\r' */
    LINE_FEED,      /* the byte after a line's '\r': skipped unread, as Redis does */
    BULK_DATA,
    BULK_END,       /* the two bytes after a bulk string: skipped unread, as Redis does */
    INLINE_BLANKS,  /* before an inline command's name */
    INLINE_NAME,
    INLINE_REST,    /* the rest of the line */
} parse_state;

typedef enum { PASS, REFUSE, UNPARSABLE } outcome;

static char refused[MAX_COMMANDS][MAX_NAME];
static size_t refused_len[MAX_COMMANDS];
static size_t refused_count;
static bool configured;

static struct {
    parse_state state, after_line_feed;
    char number[MAX_NUMBER_LINE];
    size_t number_len;
    int64_t elements_left;  /* of the current array, the one being read included */
    int64_t bulk_left;      /* bytes of the current bulk string still to come */
    int end_left;           /* bytes of BULK_END still to skip */
    bool naming;            /* the current bulk string is the command's name */
    char name[MAX_NAME];
    size_t name_len;
    bool name_too_long;
} p;

static bool closed;  /* a verdict closed the connection: nothing more passes */

static char upper(char c) { return c >= 'a' && c <= 'z' ? (char)(c - 'a' + 'A') : c; }

static void configure(void) {
    hf_string list;
    if (configured) return;
    configured = true;
    if (!hf_config_get("commands", &list)) return;
    size_t i = 0;
    while (i < list.len) {
        while (i < list.len && (list.ptr[i] == ',' || list.ptr[i] == ' ')) i++;
        size_t start = i;
        while (i < list.len && list.ptr[i] != ',' && list.ptr[i] != ' ') i++;
        size_t len = i - start;
        if (len == 0) continue;
        if (len > MAX_NAME || refused_count == MAX_COMMANDS) {
            hf_log(HF_ERROR, "config `commands`: at most 64 names of at most 32 bytes");
            __builtin_trap();
        }
        for (size_t k = 0; k < len; k++) refused[refused_count][k] = upper(list.ptr[start + k]);
        refused_len[refused_count++] = len;
    }
}

static bool is_refused(void) {
    if (p.name_too_long) return false;
    for (size_t i = 0; i < refused_count; i++) {
        if (refused_len[i] != p.name_len) continue;
        size_t k = 0;
        while (k < p.name_len && upper(p.name[k]) == refused[i][k]) k++;
        if (k == p.name_len) return true;
    }
    return false;
}

static void name_byte(char c) {
    if (p.name_len < MAX_NAME) p.name[p.name_len++] = c;
    else p.name_too_long = true;
}

static void new_name(void) {
    p.name_len = 0;
    p.name_too_long = false;
}

/* Redis's string2ll: an optional '-', then "0" or digits without a leading zero. */
static bool parse_number(const char *s, size_t len, int64_t *value) {
    size_t i = 0;
    bool negative = false;
    uint64_t v = 0;
    if (len == 1 && s[0] == '0') { *value = 0; return true; }
    if (i < len && s[i] == '-') { negative = true; i++; }
    if (i == len || s[i] < '1' || s[i] > '9') return false;
    for (; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') return false;
        if (v > (UINT64_MAX - 9) / 10) return false;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (v > (uint64_t)INT64_MAX + negative) return false;
    *value = negative ? (int64_t)(0 - v) : (int64_t)v;
    return true;
}

/* A byte of a "*N" or "$N" line; at its '\r', the number it held. */
static bool number_byte(char c, bool *done, int64_t *value) {
    if (c != '\r') {
        if (p.number_len == MAX_NUMBER_LINE) return false;
        p.number[p.number_len++] = c;
        return true;
    }
    *done = true;
    bool ok = parse_number(p.number, p.number_len, value);
    p.number_len = 0;
    return ok;
}

static outcome bulk_complete(void) {
    p.state = BULK_END;
    p.end_left = 2;
    if (p.naming && is_refused()) return REFUSE;
    p.naming = false;
    return PASS;
}

static bool blank(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

/* Where Redis's argument splitter (sdssplitargs) ends an unquoted argument. */
static bool separator(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

static outcome feed(const uint8_t *data, size_t len) {
    size_t i = 0;
    while (i < len) {
        char c = (char)data[i];
        bool done = false;
        int64_t n = 0;
        switch (p.state) {
        case COMMAND_START:
            if (c == '*') { p.state = COUNT_LINE; i++; }
            else p.state = INLINE_BLANKS;  /* this byte is the inline line's first */
            new_name();
            break;
        case COUNT_LINE:
            i++;
            if (!number_byte(c, &done, &n)) return UNPARSABLE;
            if (!done) break;
            if (n > MAX_ARRAY_LENGTH) return UNPARSABLE;
            p.elements_left = n;
            p.naming = true;
            p.state = LINE_FEED;
            p.after_line_feed = n <= 0 ? COMMAND_START : ELEMENT_START;  /* Redis skips those */
            break;
        case ELEMENT_START:
            i++;
            if (c != '$') return UNPARSABLE;
            p.state = LENGTH_LINE;
            break;
        case LENGTH_LINE:
            i++;
            if (!number_byte(c, &done, &n)) return UNPARSABLE;
            if (!done) break;
            if (n < 0 || n > MAX_BULK_LENGTH) return UNPARSABLE;
            p.bulk_left = n;
            p.state = LINE_FEED;
            p.after_line_feed = BULK_DATA;
            break;
        case LINE_FEED:
            i++;
            p.state = p.after_line_feed;
            if (p.state == BULK_DATA && p.bulk_left == 0 && bulk_complete() == REFUSE)
                return REFUSE;
            break;
        case BULK_DATA: {
            size_t take = len - i < (uint64_t)p.bulk_left ? len - i : (size_t)p.bulk_left;
            if (p.naming)
                for (size_t k = 0; k < take; k++) name_byte((char)data[i + k]);
            i += take;
            p.bulk_left -= (int64_t)take;
            if (p.bulk_left == 0 && bulk_complete() == REFUSE) return REFUSE;
            break;
        }
        case BULK_END:
            i++;
            if (--p.end_left > 0) break;
            p.state = --p.elements_left > 0 ? ELEMENT_START : COMMAND_START;
            break;
        case INLINE_BLANKS:
            if (c == '\n') { p.state = COMMAND_START; i++; }  /* an empty line: ignored */
            else if (blank(c)) i++;
            else p.state = INLINE_NAME;
            break;
        case INLINE_NAME:
            /* a quote anywhere in the name starts a quoted part that may spell any name
             * (with \x escapes): no client needs one */
            if (c == '"' || c == '\'' || c == '\0') return UNPARSABLE;
            if (separator(c)) {
                if (is_refused()) return REFUSE;
                p.state = INLINE_REST;
                break;  /* the separator is read again there: it may be the '\n' */
            }
            name_byte(c);
            i++;
            break;
        case INLINE_REST:
            i++;
            if (c == '\n') p.state = COMMAND_START;
            break;
        }
    }
    return PASS;
}

static hf_tcp_verdict close_with(const char *counter, const char *why, bool with_name) {
    char message[96] = {0};
    size_t len = strlen(why);
    memcpy(message, why, len);
    if (with_name) {  /* a refused name: one of the configured ones, so printable */
        message[len++] = ' ';
        memcpy(message + len, p.name, p.name_len);
    }
    closed = true;
    hf_metric_add(counter, 1);
    hf_log(HF_WARN, message);
    return hf_close();
}

hf_tcp_verdict hf_tcp_data(hf_direction direction, hf_bytes data, bool end_of_stream) {
    (void)end_of_stream;
    if (closed) return hf_close();
    if (direction != HF_INBOUND) return hf_forward();
    configure();
    switch (feed(data.ptr, data.len)) {
    case REFUSE: return close_with("refused", "closing the connection: refused", true);
    case UNPARSABLE:
        return close_with("unparsable", "closing the connection: not a command as Redis reads one",
                          false);
    default: return hf_forward();
    }
}
