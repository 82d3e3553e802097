// A body redacted as it streams through, chunk by chunk: what may still become part of a card
// number or an address when the next chunk comes (usually the last word) is held back and
// sent with the next chunk, so a number split across chunks is found whole.

import { concat } from "hyperfilter";
import { byteString, lastBreak, masks, redact } from "./redact.js";

// The most bytes held back between chunks: more than the longest card number (19 digits, 18
// separators) and than an address with a 64-byte local part and a long domain. A run of
// bytes longer than this with no space or punctuation in it (not text) is passed on in
// pieces, never cutting a match found in it.
export const HOLD_LIMIT = 1024;

export class RedactedStream {
  constructor() {
    this.held = new Uint8Array();
  }

  /** The bytes to pass on for `chunk` (all that is held, at the end of the stream), how
   * many of each kind were masked, and whether that differs from `chunk`. */
  push(chunk, endOfStream) {
    const heldBefore = this.held.length;
    const data = heldBefore ? concat(this.held, chunk) : chunk;
    const cut = endOfStream ? data.length : cutPoint(data);
    this.held = data.slice(cut);
    const result = redact(data.subarray(0, cut));
    const changed = heldBefore > 0 || cut < data.length || result.cards + result.emails > 0;
    return { ...result, changed };
  }
}

/** Where `data` can be cut: after its last byte that no match can go on past, within
 * HOLD_LIMIT of its end; else HOLD_LIMIT from its end, or before a match spanning that. */
function cutPoint(data) {
  const cut = lastBreak(data, HOLD_LIMIT);
  if (cut !== -1) return cut;
  const floor = data.length - HOLD_LIMIT;
  const spanning = masks(byteString(data)).find((m) => m.start < floor && m.end > floor);
  return spanning === undefined ? floor : spanning.start;
}
