/* Counts Redis's replies (RESP2, as Redis speaks until a client says HELLO 3), so that the
 * firewall knows when none is outstanding: only then does its own error reply reach the
 * client in the refused command's place. */
#ifndef REPLIES_H
#define REPLIES_H

#include "hyperfilter.h"

/* Bytes from Redis, in order, split anywhere. */
void replies_feed(const uint8_t *data, size_t len);
/* Complete top-level replies so far. */
uint64_t replies_complete(void);
/* The stream stopped being RESP2 as this reader knows it (RESP3, nesting too deep, a bad
 * length): from then on the count means nothing. */
bool replies_lost(void);

/* Redis's string2ll: an optional '-', then "0" or digits without a leading zero. */
bool resp_number(const char *s, size_t len, int64_t *value);

#endif
