/* Lets through only the Redis commands its config allows. The client's bytes are followed as
 * Redis's own reader (networking.c) takes them: a command starting with '*' is a RESP array
 * of bulk strings ("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"), anything else an inline command ending
 * at '\n'. The parser is a byte-at-a-time state machine kept in static memory, so a command
 * split across data events anywhere is seen whole.
 *
 * A refused command is answered "-ERR <NAME> is not allowed" in the event that completes its
 * name, so Redis never has the whole command. The connection stays open when that reply
 * takes the command's place: no reply from Redis is outstanding (replies.c counts them),
 * none of the command's bytes went to Redis before, and nothing after it is in the event
 * (an answer drops the event's bytes). Otherwise, and for the `close-on` commands, the
 * reply is sent and the connection closed. A stream it cannot follow gets Redis's own
 * "-ERR Protocol error" and a close. */
#include "hyperfilter.h"
#include "replies.h"

#define MAX_ALLOWED 128
#define MAX_CLOSE_ON 64
#define MAX_NAME 32                       /* no allowed name is longer */
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

/* Where feed() stopped: it read the whole event, a refused command's name is complete, the
 * refused command being skipped ended, or the stream is not one Redis would read. */
typedef enum { READ_ALL, REFUSED, SKIPPED, UNPARSABLE } stop;

typedef struct {
    char names[MAX_ALLOWED][MAX_NAME];
    size_t lens[MAX_ALLOWED];
    size_t count;
} name_list;

static name_list allowed, close_on;
static bool configured;

static struct {
    parse_state state, after_line_feed;
    char number[MAX_NUMBER_LINE];
    size_t number_len;
    int64_t elements_left;  /* of the current array, the one being read included */
    int64_t bulk_left;      /* bytes of the current bulk string still to come */
    int end_left;           /* bytes of BULK_END still to skip */
    bool naming;            /* the current bulk string is the command's name */
    bool skipping;          /* the current command was refused: its bytes are dropped */
    bool started_here;      /* the current command began in the event being read */
    char name[MAX_NAME];
    size_t name_len;
    bool name_too_long;
} p;

static uint64_t commands_sent;  /* commands Redis has whole and will reply to, once each */
static bool closed;             /* a verdict closed the connection: nothing more passes */

static char upper(char c) { return c >= 'a' && c <= 'z' ? (char)(c - 'a' + 'A') : c; }

/* Config `key`: names, case-insensitive, separated by commas or spaces. */
static void read_list(const char *key, name_list *list, size_t capacity) {
    hf_string text;
    if (!hf_config_get(key, &text)) return;
    size_t i = 0;
    while (i < text.len) {
        while (i < text.len && (text.ptr[i] == ',' || text.ptr[i] == ' ')) i++;
        size_t start = i;
        while (i < text.len && text.ptr[i] != ',' && text.ptr[i] != ' ') i++;
        size_t len = i - start;
        if (len == 0) continue;
        if (len > MAX_NAME || list->count == capacity) {
            hf_log(HF_ERROR, key[0] == 'a' ? "config `allow`: at most 128 names of at most 32 bytes"
                                           : "config `close-on`: at most 64 names of at most 32 bytes");
            __builtin_trap();
        }
        for (size_t k = 0; k < len; k++) list->names[list->count][k] = upper(text.ptr[start + k]);
        list->lens[list->count++] = len;
    }
}

static void configure(void) {
    if (configured) return;
    configured = true;
    read_list("allow", &allowed, MAX_ALLOWED);
    read_list("close-on", &close_on, MAX_CLOSE_ON);
}

static bool listed(const name_list *list) {
    if (p.name_too_long) return false;
    for (size_t i = 0; i < list->count; i++) {
        if (list->lens[i] != p.name_len) continue;
        size_t k = 0;
        while (k < p.name_len && upper(p.name[k]) == list->names[i][k]) k++;
        if (k == p.name_len) return true;
    }
    return false;
}

static void name_byte(char c) {
    if (p.name_len < MAX_NAME) p.name[p.name_len++] = c;
    else p.name_too_long = true;
}

static void new_command(void) {
    p.name_len = 0;
    p.name_too_long = false;
    p.started_here = true;
}

/* The current command's last byte was read: Redis will answer it, unless it was refused. */
static void command_end(void) {
    p.state = COMMAND_START;
    if (p.skipping) p.skipping = false;
    else commands_sent++;
}

/* A byte of a "*N" or "$N" line; at its '\r', the number it held. */
static bool number_byte(char c, bool *done, int64_t *value) {
    if (c != '\r') {
        if (p.number_len == MAX_NUMBER_LINE) return false;
        p.number[p.number_len++] = c;
        return true;
    }
    *done = true;
    bool ok = resp_number(p.number, p.number_len, value);
    p.number_len = 0;
    return ok;
}

/* A bulk string ended; true when it was the name of a command that is not allowed. */
static bool bulk_complete(void) {
    p.state = BULK_END;
    p.end_left = 2;
    bool naming = p.naming;
    p.naming = false;
    return naming && !listed(&allowed);
}

static bool blank(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

/* Where Redis's argument splitter (sdssplitargs) ends an unquoted argument. */
static bool separator(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* Reads data[*at..len), leaving *at where it stopped. */
static stop feed(const uint8_t *data, size_t len, size_t *at) {
    size_t i = *at;
    stop why = READ_ALL;
    while (i < len && why == READ_ALL) {
        char c = (char)data[i];
        bool done = false;
        int64_t n = 0;
        switch (p.state) {
        case COMMAND_START:
            if (c == '*') { p.state = COUNT_LINE; i++; }
            else p.state = INLINE_BLANKS;  /* this byte is the inline line's first */
            new_command();
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
            if (p.state == BULK_DATA && p.bulk_left == 0 && bulk_complete()) why = REFUSED;
            break;
        case BULK_DATA: {
            size_t take = len - i < (uint64_t)p.bulk_left ? len - i : (size_t)p.bulk_left;
            if (p.naming)
                for (size_t k = 0; k < take; k++) name_byte((char)data[i + k]);
            i += take;
            p.bulk_left -= (int64_t)take;
            if (p.bulk_left == 0 && bulk_complete()) why = REFUSED;
            break;
        }
        case BULK_END:
            i++;
            if (--p.end_left > 0) break;
            if (--p.elements_left > 0) { p.state = ELEMENT_START; break; }
            if (p.skipping) why = SKIPPED;
            command_end();
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
                p.state = INLINE_REST;  /* the separator is read again there: it may be '\n' */
                if (!listed(&allowed)) why = REFUSED;
                break;
            }
            name_byte(c);
            i++;
            break;
        case INLINE_REST:
            i++;
            if (c != '\n') break;
            if (p.skipping) why = SKIPPED;
            command_end();
            break;
        }
    }
    *at = i;
    return why;
}

/* Logs an error reply's text: `what` then the reply without "-ERR " and "\r\n". */
static void log_reply(hf_log_level level, const char *what, const char *reply, size_t len) {
    size_t what_len = strlen(what), text_len = len - 7;
    char *line = hf_alloc(what_len + text_len + 1);
    memcpy(line, what, what_len);
    memcpy(line + what_len, reply + 5, text_len);
    line[what_len + text_len] = 0;
    hf_log(level, line);
}

static hf_tcp_verdict stop_with(const char *counter, const char *reply, size_t len) {
    closed = true;
    hf_metric_add(counter, 1);
    log_reply(HF_WARN, "closing the connection: ", reply, len);
    return hf_answer_and_close(reply, len);
}

static hf_tcp_verdict unparsable(void) {
    static const char reply[] = "-ERR Protocol error: not a command as Redis reads one\r\n";
    return stop_with("unparsable", reply, sizeof reply - 1);
}

/* "-ERR <NAME> is not allowed\r\n": the name as the client sent it, upper-case, anything
 * but letters, digits and "-_.:" shown as '?' (it may hold any byte). */
static size_t refusal(char *out) {
    static const char tail[] = " is not allowed\r\n";
    size_t len = 5;
    memcpy(out, "-ERR ", 5);
    for (size_t i = 0; i < p.name_len; i++) {
        char c = upper(p.name[i]);
        bool plain = (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
                     c == '.' || c == ':';
        out[len++] = plain ? c : '?';
    }
    if (p.name_too_long) { memcpy(out + len, "...", 3); len += 3; }
    memcpy(out + len, tail, sizeof tail - 1);
    return len + sizeof tail - 1;
}

/* A command that is not allowed; `at` is where its name ended in the event. */
static hf_tcp_verdict refuse(hf_bytes data, size_t at) {
    char *reply = hf_alloc(5 + MAX_NAME + 3 + 17);
    size_t len = refusal(reply);
    bool in_place = !listed(&close_on) && p.started_here && !replies_lost() &&
                    replies_complete() == commands_sent;
    if (!in_place) return stop_with("refused", reply, len);
    p.skipping = true;
    switch (feed(data.ptr, data.len, &at)) {
    case UNPARSABLE: return unparsable();
    case SKIPPED: if (at < data.len) return stop_with("refused", reply, len); break;
    default: break;
    }
    hf_metric_add("refused", 1);
    log_reply(HF_INFO, "answered: ", reply, len);
    return hf_answer(reply, len);
}

static hf_tcp_verdict inbound(hf_bytes data) {
    p.started_here = false;
    size_t at = 0, passed_from = 0;
    if (p.skipping) {  /* the rest of a command refused in an earlier event */
        switch (feed(data.ptr, data.len, &at)) {
        case UNPARSABLE: return unparsable();
        case READ_ALL: return hf_replace("", 0);
        default: passed_from = at; break;
        }
    }
    switch (feed(data.ptr, data.len, &at)) {
    case UNPARSABLE: return unparsable();
    case REFUSED: return refuse(data, at);
    default: break;
    }
    return passed_from ? hf_replace(data.ptr + passed_from, data.len - passed_from) : hf_forward();
}

hf_tcp_verdict hf_tcp_data(hf_direction direction, hf_bytes data, bool end_of_stream) {
    (void)end_of_stream;
    if (closed) return hf_close();
    if (direction == HF_OUTBOUND) {
        replies_feed(data.ptr, data.len);
        return hf_forward();
    }
    configure();
    return inbound(data);
}
