// pii-redactor: masks payment card numbers and e-mail addresses in HTTP bodies, both ways,
// as they stream through. See manifest.toml.

import { forward, http, respond, tcp } from "hyperfilter";
import { add } from "@hyperfilter/metrics";
import { RedactedStream } from "./stream.js";

// One sandbox per request: these last for the request and its response.
const streams = { inbound: new RedactedStream(), outbound: new RedactedStream() };

export const tcpFilter = tcp({});

export const httpFilter = http({
  onBody(direction, body, endOfStream) {
    const { data, cards, emails, changed } = streams[direction].push(body, endOfStream);
    if (cards) add("cards_masked", cards);
    if (emails) add("emails_masked", emails);
    return changed ? forward({ body: data }) : forward();
  },

  // A streamed body that ends in trailers gets no last chunk with the end of the stream, and
  // the trailers' answer cannot carry bytes: what is still held back cannot be sent. The
  // request is refused rather than passed on cut short (a response, reset).
  onTrailers(direction) {
    if (streams[direction].held.length === 0) return forward();
    return respond(500, "refused: the body ended in trailers before it could be redacted\n");
  },
});
