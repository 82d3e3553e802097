// What counts as personal data here, and how it is masked: payment card numbers and e-mail
// addresses, found in bytes (any encoding that keeps ASCII as ASCII), masked in place so that
// the body keeps its length.
//
// The scans are regular expressions over a string of one character per byte: the JS engine
// runs those in native code, where a loop over the bytes in JavaScript, interpreted inside
// the sandbox, takes a microsecond or more a byte.

// A run of 13 digits or more, single spaces or dashes allowed between them (a longer run is
// not a card number, nor any part of it).
const CARD_RUN = /\d(?:[ -]?\d){12,}/g;
const MAX_CARD_DIGITS = 19;
const KEPT_DIGITS = 4; // of a card number, the last
const DOUBLED = [0, 2, 4, 6, 8, 1, 3, 5, 7, 9]; // a digit doubled, its digits summed
// local@domain.tld, looked for around each @ only (a pattern tried at every byte costs
// several times the card numbers' scan): up to 64 bytes of local part before it (RFC 5321's
// limit), a domain of dotted labels after it, at most 255 bytes.
const MAX_LOCAL_PART = 64;
const MAX_DOMAIN = 255;
const LOCAL_PART = /[A-Za-z0-9._%+-]+$/;
const DOMAIN = /^[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+/;
const STAR = 0x2a;
const ZERO = 0x30;
// Up to the last byte after which no card number or address can go on: one that is in
// neither (anything but letters, digits, . _ % + - @ and space), or a space that follows
// no digit (a space joins digit groups only).
const UP_TO_LAST_BREAK = /^[\s\S]*(?:[^A-Za-z0-9._%+@ -]|[^0-9] )/;
const BYTE_STRING_PIECE = 8192; // bytes per String.fromCharCode call, one argument each

/** `data` as a string of one character per byte. */
export function byteString(data) {
  let text = "";
  for (let i = 0; i < data.length; i += BYTE_STRING_PIECE) {
    text += String.fromCharCode.apply(null, data.subarray(i, i + BYTE_STRING_PIECE));
  }
  return text;
}

/** The masks to apply to `text` (from `byteString`), each `{ start, end, card }`: a
 * Luhn-valid card number, with where its last four digits start (`kept`), or an address,
 * with where its @ is. (Card numbers are taken through `replace`, whose callbacks cost less
 * here than an iterator.) */
export function masks(text) {
  const found = [];
  text.replace(CARD_RUN, (run, start) => {
    const kept = lastFourAt(run);
    if (kept !== -1) found.push({ start, end: start + run.length, card: true, kept: start + kept });
    return run;
  });
  for (let at = text.indexOf("@"); at !== -1; at = text.indexOf("@", at + 1)) {
    const local = LOCAL_PART.exec(text.slice(Math.max(0, at - MAX_LOCAL_PART), at));
    const domain = local && DOMAIN.exec(text.slice(at + 1, at + 1 + MAX_DOMAIN));
    if (domain) {
      const start = at - local[0].length;
      found.push({ start, end: at + 1 + domain[0].length, card: false, at });
    }
  }
  return found;
}

/** Where the last four digits of `run` start, if it is a card number: 13 to 19 digits that
 * pass the Luhn check; else -1. (One pass over the run: in an interpreter every operation
 * counts, and a regular expression's `replace` loops in interpreted code too.) */
function lastFourAt(run) {
  if (run.length > 2 * MAX_CARD_DIGITS - 1) return -1; // 20 digits or more, surely
  let sum = 0;
  let digits = 0;
  let kept = 0;
  for (let k = run.length - 1; k >= 0; k--) {
    const value = run.charCodeAt(k) - 0x30;
    if (value < 0 || value > 9) continue; // a separator
    sum += digits++ & 1 ? DOUBLED[value] : value;
    if (digits === KEPT_DIGITS) kept = k;
  }
  return digits <= MAX_CARD_DIGITS && sum % 10 === 0 ? kept : -1;
}

/** `data` with every card number and address in it masked (a copy, when there are any), and
 * how many of each. */
export function redact(data) {
  const found = masks(byteString(data));
  if (found.length === 0) return { data, cards: 0, emails: 0 };
  const out = data.slice();
  let cards = 0;
  for (const m of found) {
    if (m.card) {
      for (let k = m.start; k < m.kept; k++) if (out[k] >= ZERO) out[k] = STAR; // not - or space
      cards++;
    } else {
      out.fill(STAR, m.start, m.at);
      out.fill(STAR, m.at + 1, m.end);
    }
  }
  return { data: out, cards, emails: found.length - cards };
}

/** Where a streamed body can be cut, looking at its last `window` bytes: the end of the last
 * byte there that no card number or address can go on past, or -1 if there is none. */
export function lastBreak(data, window) {
  // The byte before the window is looked at too (a space needs it); before the start of the
  // body there is nothing to go on from, as after a newline.
  const from = Math.max(0, data.length - window);
  const text = (from === 0 ? "\n" : "") + byteString(data.subarray(Math.max(0, from - 1)));
  const upTo = UP_TO_LAST_BREAK.exec(text);
  return upTo === null ? -1 : from - 1 + upTo[0].length;
}
