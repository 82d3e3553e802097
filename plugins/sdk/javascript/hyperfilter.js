// hyperfilter's JavaScript SDK for plugins built with componentize-js.
//
// A plugin's app.js exports `tcpFilter` and `httpFilter` (the world's two interfaces); wrap
// the hooks you write with `tcp()` and `http()`, which fill in the others (they forward) and
// check every verdict, so a mistake is told in one line with the hook's name:
//
//     import { http, tcp, forward, respond, header } from "hyperfilter";
//
//     export const tcpFilter = tcp({});
//     export const httpFilter = http({
//       onHeaders(direction, headers, endOfStream) {
//         if (header(headers, "x-api-key") !== "secret") return respond(401, "unauthorized\n");
//         return forward({ setHeaders: { "x-checked": "yes" } });
//       },
//     });
//
// Bytes (TCP data, bodies, header values) are Uint8Array; wherever a verdict takes bytes it
// also takes a string (UTF-8). State in module variables lasts for one stream: a sandbox is
// made for each TCP connection or HTTP request and thrown away after it.
//
// Capabilities the manifest grants are modules of their own, `@hyperfilter/<capability>`:
//
//     import { log } from "@hyperfilter/log";          // log("info", "message")
//     import { get } from "@hyperfilter/config";       // get("key") -> string | undefined
//     import * as state from "@hyperfilter/shared-state";
//
// `hyperfilter plugin build` makes exactly the granted ones (plugins/wit/hyperfilter.wit has
// their functions; u64/s64 values are BigInt there, and a `result` error is thrown as an
// Error whose `payload` is the error case, e.g. "quota-exceeded").

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export const INBOUND = "inbound"; // from the client: TCP bytes it sent, the HTTP request
export const OUTBOUND = "outbound"; // toward the client: TCP bytes for it, the HTTP response

// --- bytes and text -------------------------------------------------------------------------

/** `value` as bytes: a string is encoded as UTF-8, a Uint8Array is returned as it is. */
export function bytes(value) {
  if (value instanceof Uint8Array) return value;
  if (typeof value === "string") return encoder.encode(value);
  if (ArrayBuffer.isView(value)) {
    return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  }
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  throw new TypeError(`expected a string or a Uint8Array, got ${describe(value)}`);
}

/** Bytes decoded as UTF-8 (invalid sequences become U+FFFD). */
export function text(data) {
  return decoder.decode(data);
}

/** The bytes of every argument, one after the other, in a new Uint8Array. */
export function concat(...parts) {
  const arrays = parts.map(bytes);
  const out = new Uint8Array(arrays.reduce((total, part) => total + part.length, 0));
  let offset = 0;
  for (const part of arrays) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

// --- headers --------------------------------------------------------------------------------

/** The value of header `name` as text, or undefined. Envoy sends names in lower case. */
export function header(headers, name) {
  const value = headerBytes(headers, name);
  return value === undefined ? undefined : text(value);
}

/** The raw value of header `name`, or undefined. */
export function headerBytes(headers, name) {
  const wanted = name.toLowerCase();
  const found = headers.find(([key]) => key === wanted);
  return found === undefined ? undefined : found[1];
}

/** Every value of header `name`, as text, in order. */
export function headerValues(headers, name) {
  const wanted = name.toLowerCase();
  return headers.filter(([key]) => key === wanted).map(([, value]) => text(value));
}

/** The stream's gRPC metadata entry `key` (set by the Envoy filter), from onOpen's `info`. */
export function metadata(info, key) {
  const found = info.metadata.find(([name]) => name === key);
  return found === undefined ? undefined : found[1];
}

/** Fields as the world takes them ([name, bytes] pairs, lower-case names), from pairs or an
 * object of name: value; values may be strings. */
export function fields(entries) {
  const pairs = Array.isArray(entries) ? entries : Object.entries(entries ?? {});
  return pairs.map((pair) => {
    if (!Array.isArray(pair) || pair.length !== 2 || typeof pair[0] !== "string") {
      throw new TypeError(`a header is a [name, value] pair, got ${describe(pair)}`);
    }
    return [pair[0].toLowerCase(), bytes(pair[1])];
  });
}

// --- verdicts -------------------------------------------------------------------------------

/** TCP: pass the bytes on unchanged. HTTP: continue, with these changes if any:
 * `{ setHeaders, removeHeaders, body }` (headers as for `fields`; `body` replaces the body,
 * or, when it is streamed, this chunk). */
export function forward(changes) {
  return changes === undefined ? { tag: "forward" } : { tag: "forward", val: changes };
}

/** TCP: pass `data` on instead of the bytes received (from onOpen: send it upstream first). */
export function replace(data) {
  return { tag: "replace", val: bytes(data) };
}

/** TCP: drop the bytes and close the connection (FIN). */
export function close() {
  return { tag: "close" };
}

/** TCP: drop the bytes and reset the connection (RST). */
export function reset() {
  return { tag: "reset" };
}

/** TCP: drop the bytes and send `data` to the client instead; the connection stays open. */
export function answer(data) {
  return { tag: "answer", val: bytes(data) };
}

/** TCP: drop the bytes, send `data` to the client, then close the connection (FIN). */
export function answerAndClose(data) {
  return { tag: "answer-and-close", val: bytes(data) };
}

/** HTTP: answer the client now instead of forwarding. */
export function respond(status, body = "", headers = []) {
  return { tag: "respond", val: { status, headers: fields(headers), body: bytes(body) } };
}

// --- the two filters ------------------------------------------------------------------------

const TCP_HOOKS = ["onOpen", "onData", "onClose"];
const HTTP_HOOKS = ["onOpen", "onHeaders", "onBody", "onTrailers"];
const TCP_CASES = new Set(["forward", "replace", "close", "reset", "answer", "answer-and-close"]);
const TCP_PAYLOAD = new Set(["replace", "answer", "answer-and-close"]);
const TCP_EXAMPLES = "forward(), replace(data), close(), reset(), answer(data)";
const HTTP_EXAMPLES = "forward(), forward({ setHeaders, removeHeaders, body }), respond(status)";

/** The `tcpFilter` export: your hooks, the rest forwarding, every verdict checked. */
export function tcp(hooks) {
  checkHooks(hooks, TCP_HOOKS, "tcp");
  return {
    onOpen: (info) => guarded(hooks, "onOpen", [info], tcpVerdict),
    onData: (direction, data, endOfStream) =>
      guarded(hooks, "onData", [direction, data, endOfStream], tcpVerdict),
    onClose: () => guarded(hooks, "onClose", [], () => undefined),
  };
}

/** The `httpFilter` export: your hooks, the rest forwarding, every verdict checked. */
export function http(hooks) {
  checkHooks(hooks, HTTP_HOOKS, "http");
  return {
    onOpen: (info) => guarded(hooks, "onOpen", [info], httpVerdict),
    onHeaders: (direction, headers, endOfStream) =>
      guarded(hooks, "onHeaders", [direction, headers, endOfStream], httpVerdict),
    onBody: (direction, body, endOfStream) =>
      guarded(hooks, "onBody", [direction, body, endOfStream], httpVerdict),
    onTrailers: (direction, trailers) =>
      guarded(hooks, "onTrailers", [direction, trailers], httpVerdict),
  };
}

function checkHooks(hooks, known, kind) {
  for (const [name, hook] of Object.entries(hooks ?? {})) {
    if (!known.includes(name)) {
      throw new TypeError(`${kind}(): unknown hook ${name} (there are: ${known.join(", ")})`);
    }
    if (typeof hook !== "function") throw new TypeError(`${kind}(): ${name} is not a function`);
  }
}

class VerdictError extends TypeError {}

function tcpVerdict(verdict, hook) {
  const tag = verdictTag(hook, verdict, TCP_EXAMPLES);
  if (!TCP_CASES.has(tag)) {
    throw new VerdictError(`${hook} returned ${describe(verdict)}: not a TCP verdict ` +
                           `(${TCP_EXAMPLES})`);
  }
  if (TCP_PAYLOAD.has(tag)) return { tag, val: checkedBytes(hook, verdict.val, `${tag} data`) };
  if (verdict.val !== undefined) {
    throw new VerdictError(`${hook} returned ${tag} with changes: a TCP ${tag} takes none ` +
                           `(replace(data) passes other bytes on)`);
  }
  return { tag };
}

function httpVerdict(verdict, hook) {
  const tag = verdictTag(hook, verdict, HTTP_EXAMPLES);
  if (tag === "respond") return respondVerdict(hook, verdict.val);
  if (tag !== "forward") {
    throw new VerdictError(`${hook} returned ${describe(verdict)}: not an HTTP verdict ` +
                           `(${HTTP_EXAMPLES})`);
  }
  const { setHeaders = [], removeHeaders = [], body, ...unknown } = verdict.val ?? {};
  const extra = Object.keys(unknown);
  if (extra.length) {
    throw new VerdictError(`${hook} returned forward() with unknown changes: ` +
                           `${extra.join(", ")} (there are: setHeaders, removeHeaders, body)`);
  }
  if (!Array.isArray(removeHeaders) || removeHeaders.some((name) => typeof name !== "string")) {
    throw new VerdictError(`${hook} returned forward() whose removeHeaders is not a list of ` +
                           `names: ${describe(removeHeaders)}`);
  }
  return {
    tag,
    val: {
      setHeaders: checkedFields(hook, setHeaders, "setHeaders"),
      removeHeaders: removeHeaders.map((name) => name.toLowerCase()),
      body: body === undefined ? undefined : checkedBytes(hook, body, "body"),
    },
  };
}

function respondVerdict(hook, response) {
  const { status, headers = [], body = new Uint8Array() } = response ?? {};
  if (!Number.isInteger(status) || status < 0 || status > 0xffff) {
    throw new VerdictError(`${hook} returned respond() with status ${describe(status)}: an ` +
                           `HTTP status is an integer such as 403`);
  }
  return {
    tag: "respond",
    val: { status, headers: checkedFields(hook, headers, "headers"),
           body: checkedBytes(hook, body, "body") },
  };
}

function verdictTag(hook, verdict, examples) {
  if (verdict === null || typeof verdict !== "object" || typeof verdict.tag !== "string") {
    throw new VerdictError(`${hook} returned ${describe(verdict)}: return a verdict ` +
                           `(${examples})`);
  }
  return verdict.tag;
}

function checkedBytes(hook, value, what) {
  try {
    return bytes(value);
  } catch (error) {
    throw new VerdictError(`${hook} returned a verdict whose ${what} is not bytes: ` +
                           `${error.message}`);
  }
}

function checkedFields(hook, value, what) {
  try {
    return fields(value);
  } catch (error) {
    throw new VerdictError(`${hook} returned a verdict whose ${what} are not headers: ` +
                           `${error.message}`);
  }
}

// --- failures -------------------------------------------------------------------------------
//
// A hook that throws, or returns something that is not a verdict, fails its event under the
// plugin's failure policy. The error and the plugin's own stack frames go to stderr, which
// the sidecar puts in the plugin's log; then one line saying why, which the sidecar makes the
// message of the event's fault (vmm/fault_notes.py); then the call traps.

const FAULT_NOTE = "hyperfilter-fault: "; // vmm/fault_notes.py's FAULT_NOTE
const MAX_CAUSE = 300;

function guarded(hooks, name, args, check) {
  const hook = hooks[name];
  try {
    return check(hook === undefined ? forward() : hook(...args), name);
  } catch (error) {
    fail(name, error);
  }
}

function fail(hook, error) {
  const frames = ownFrames(error);
  const cause = error instanceof VerdictError ? error.message
    : `${hook} threw ${errorText(error)}${frames.length ? ` at ${frames[0].where}` : ""}`;
  console.error([errorText(error), ...frames.map((f) => `    at ${f.name} (${f.where})`)]
    .join("\n"));
  console.error(FAULT_NOTE + cause.split(/\s+/).join(" ").slice(0, MAX_CAUSE));
  throw "the event failed"; // uncaught, so the call traps
}

function errorText(error) {
  return error instanceof Error ? `${error.name}: ${error.message}` : describe(error);
}

/** The plugin's frames of `error`'s stack: not this SDK's, nor componentize-js's glue. */
function ownFrames(error) {
  const frames = [];
  for (const line of String(error?.stack ?? "").split("\n")) {
    const frame = /^(.*)@(.+:\d+):\d+$/.exec(line);
    if (frame === null) continue;
    const file = frame[2].replace(/:\d+$/, "");
    if (file === "hyperfilter.js" || file.endsWith("/initializer.js")) continue;
    frames.push({ name: frame[1] || "<module>", where: frame[2] });
  }
  return frames;
}

function describe(value) {
  if (value === undefined || value === null) return String(value);
  if (value instanceof Uint8Array) return `${value.length} bytes`;
  if (typeof value === "function") return "a function";
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}
