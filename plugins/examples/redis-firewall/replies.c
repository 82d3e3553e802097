/* A byte-at-a-time reader of Redis's RESP2 replies: simple strings (+), errors (-),
 * integers (:) and bulk strings ($) are one reply each, arrays (*) one with all their
 * elements, nested. Only the count matters: the replies' content is skipped. */
#include "replies.h"

#define MAX_DEPTH 16                      /* nested arrays deeper than this: lost */
#define MAX_NUMBER_LINE 20                /* "-9223372036854775808" */

typedef enum { TYPE, LINE, NUMBER, LINE_FEED, BULK, DONE } reply_state;

static struct {
    reply_state state, after_line_feed;
    char type;
    char number[MAX_NUMBER_LINE];
    size_t number_len;
    int64_t bulk_left;                    /* bulk bytes, then its "\r\n", still to skip */
    int64_t elements_left[MAX_DEPTH];     /* of each array being read, outermost first */
    size_t depth;
    uint64_t complete;
    bool lost;
} r;

uint64_t replies_complete(void) { return r.complete; }
bool replies_lost(void) { return r.lost; }

bool resp_number(const char *s, size_t len, int64_t *value) {
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

/* A value ended: it completes a reply, or counts toward the arrays holding it. */
static void value_done(void) {
    while (r.depth && --r.elements_left[r.depth - 1] == 0) r.depth--;
    if (r.depth == 0) r.complete++;
    r.state = TYPE;
}

/* The number ending a "$N" or "*N" line: what follows its line feed. */
static void number_done(void) {
    int64_t n;
    bool ok = resp_number(r.number, r.number_len, &n);
    r.number_len = 0;
    if (!ok || n < -1) { r.lost = true; return; }
    r.state = LINE_FEED;
    r.after_line_feed = DONE;  /* a null bulk string, a null or empty array */
    if (r.type == '$' && n >= 0) {
        r.bulk_left = n + 2;
        r.after_line_feed = BULK;
    } else if (r.type == '*' && n > 0) {
        if (r.depth == MAX_DEPTH) { r.lost = true; return; }
        r.elements_left[r.depth++] = n;
        r.after_line_feed = TYPE;
    }
}

static void byte(char c) {
    switch (r.state) {
    case TYPE:
        r.type = c;
        if (c == '+' || c == '-' || c == ':') r.state = LINE;
        else if (c == '$' || c == '*') r.state = NUMBER;
        else r.lost = true;  /* RESP3, or not RESP at all */
        break;
    case LINE:
        if (c == '\n') value_done();
        break;
    case NUMBER:
        if (c == '\r') number_done();
        else if (r.number_len == MAX_NUMBER_LINE) r.lost = true;
        else r.number[r.number_len++] = c;
        break;
    case LINE_FEED:  /* the byte after a "$N" or "*N" line's '\r' */
        r.state = r.after_line_feed;
        if (r.state == DONE) value_done();
        break;
    case BULK:
    case DONE:
        break;  /* BULK is read a run at a time in replies_feed; DONE never stays */
    }
}

void replies_feed(const uint8_t *data, size_t len) {
    size_t i = 0;
    while (i < len && !r.lost) {
        if (r.state == BULK) {
            size_t take = len - i < (uint64_t)r.bulk_left ? len - i : (size_t)r.bulk_left;
            i += take;
            r.bulk_left -= (int64_t)take;
            if (r.bulk_left == 0) value_done();
            continue;
        }
        byte((char)data[i++]);
    }
}
