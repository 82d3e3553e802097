// ${name}: a hyperfilter plugin (built with componentize-js; see plugins/sdk/javascript).
//
// Hooks not given here forward everything. A hook that throws, or returns what is not a
// verdict, fails its event under the manifest's failure policy: the sidecar's log shows why,
// with this file's line numbers. Module variables last for one stream (one sandbox each).
import { INBOUND, close, forward, header, http, respond, tcp, text } from "hyperfilter";
import { get } from "@hyperfilter/config";
import { log } from "@hyperfilter/log";

export const tcpFilter = tcp({
  onData(direction, data, endOfStream) {
    if (direction === INBOUND && text(data).includes("forbidden")) {
      log("warn", "closing a connection");
      return close();
    }
    return forward();
  },
});

export const httpFilter = http({
  onHeaders(direction, headers, endOfStream) {
    if (header(headers, "x-block") !== undefined) return respond(403, "blocked\n");
    return forward({ setHeaders: { "x-greeting": get("greeting") ?? "hello" } });
  },
});
