// Package hyperfilter writes hyperfilter plugins in Go: a core WebAssembly module (GOOS=wasip1,
// GOARCH=wasm, -buildmode=c-shared) implementing the canonical-ABI lowering of the world in
// plugins/wit/hyperfilter.wit. `hyperfilter plugin build DIR` builds it.
//
// A plugin registers its filters from an init function and leaves main empty:
//
//	type filter struct{ hyperfilter.TCPDefaults }
//
//	func (filter) OnData(dir hyperfilter.Direction, data []byte, eos bool) hyperfilter.TCPVerdict {
//		return hyperfilter.Forward()
//	}
//
//	func init() { hyperfilter.HandleTCP(filter{}) }
//	func main() {}
//
// Every connection (TCP) or request (HTTP) runs in a fresh sandbox: package variables hold
// one stream's state and start anew with the next stream. What the host hands a handler
// (bytes, strings, headers) stays valid after the handler returns; keep what you need.
//
// Call capabilities (Log, Config, StateIncrement, ...) from the filter's methods, not from
// init: on the kvm tier the runtime and init run once, at load, where the host serves only
// WASI. Go's runtime imports WASI preview 1; the host answers it denying: no files, an empty
// environment, stdout and stderr into the plugin's log. A panic fails the event (the
// plugin's failure policy applies) and its message and traceback go to the log.
package hyperfilter

import "strings"

// Direction says which way bytes travel.
type Direction uint32

const (
	// Inbound is from the client toward the upstream: TCP bytes Envoy read, the HTTP request.
	Inbound Direction = 0
	// Outbound is from the upstream toward the client: TCP bytes Envoy writes, the response.
	Outbound Direction = 1
)

func (d Direction) String() string {
	if d == Outbound {
		return "outbound"
	}
	return "inbound"
}

// Pair is one entry of the stream's gRPC metadata.
type Pair struct{ Key, Value string }

// StreamInfo is what the sidecar knows about a stream when it opens.
type StreamInfo struct {
	SourceAddress      string // the client's "ip:port"; empty when Envoy does not send it
	DestinationAddress string // the address the client connected to; empty when unknown
	ServerName         string // the TLS server name (SNI) the client asked for; empty when unknown
	Metadata           []Pair // the Envoy stream's gRPC metadata (the filter's initial_metadata)
}

// SourceIP is the source address without its port ("10.0.0.1", "::1"); empty when unknown.
func (info *StreamInfo) SourceIP() string { return hostOf(info.SourceAddress) }

// MetadataValue is the first metadata value under key.
func (info *StreamInfo) MetadataValue(key string) (string, bool) {
	for _, pair := range info.Metadata {
		if pair.Key == key {
			return pair.Value, true
		}
	}
	return "", false
}

// hostOf cuts the port off "ip:port" or "[ipv6]:port"; an address without a port is kept.
func hostOf(address string) string {
	if len(address) > 0 && address[0] == '[' {
		if end := strings.IndexByte(address, ']'); end > 0 {
			return address[1:end]
		}
		return address
	}
	colon := strings.LastIndexByte(address, ':')
	if colon < 0 || strings.IndexByte(address[:colon], ':') >= 0 {
		return address // no port, or a bare IPv6 address
	}
	return address[:colon]
}

// Field is one HTTP header or trailer: a lower-case name and its raw value.
type Field struct {
	Name  string
	Value []byte
}

// Fields are HTTP headers or trailers in Envoy's order.
type Fields []Field

// Get is the value of the first field named name (lower-case).
func (fields Fields) Get(name string) ([]byte, bool) {
	for _, field := range fields {
		if field.Name == name {
			return field.Value, true
		}
	}
	return nil, false
}

// ---- TCP ------------------------------------------------------------------------------------

type tcpAction uint8

// The tcp-verdict variant's cases, by tag.
const (
	tcpForward tcpAction = iota
	tcpReplace
	tcpClose
	tcpReset
	tcpAnswer
	tcpAnswerAndClose
)

// TCPVerdict says what to do with a piece of a TCP connection.
type TCPVerdict struct {
	action tcpAction
	data   []byte
}

// Forward passes the bytes on unchanged.
func Forward() TCPVerdict { return TCPVerdict{action: tcpForward} }

// Replace passes data instead of the bytes received; from OnOpen, sends it upstream before
// the client's bytes.
func Replace(data []byte) TCPVerdict { return TCPVerdict{tcpReplace, data} }

// Close drops the bytes and closes the connection (FIN).
func Close() TCPVerdict { return TCPVerdict{action: tcpClose} }

// Reset drops the bytes and resets the connection (RST).
func Reset() TCPVerdict { return TCPVerdict{action: tcpReset} }

// Answer drops the bytes received and sends data toward the client; the connection stays
// open. From OnOpen: sent to the client before anything else (a banner).
func Answer(data []byte) TCPVerdict { return TCPVerdict{tcpAnswer, data} }

// AnswerAndClose drops the bytes received, sends data toward the client, then closes the
// connection (FIN).
func AnswerAndClose(data []byte) TCPVerdict { return TCPVerdict{tcpAnswerAndClose, data} }

// TCPFilter handles one TCP connection's events. Embed TCPDefaults to implement only some.
type TCPFilter interface {
	OnOpen(info *StreamInfo) TCPVerdict
	OnData(direction Direction, data []byte, endOfStream bool) TCPVerdict
	OnClose()
}

// TCPDefaults forwards everything; embed it and override the events the manifest names.
type TCPDefaults struct{}

func (TCPDefaults) OnOpen(*StreamInfo) TCPVerdict             { return Forward() }
func (TCPDefaults) OnData(Direction, []byte, bool) TCPVerdict { return Forward() }
func (TCPDefaults) OnClose()                                  {}

// ---- HTTP -----------------------------------------------------------------------------------

// HTTPVerdict says what to do with a piece of an HTTP request or response: continue with
// changes (Continue, then SetHeader, RemoveHeader, SetBody), or answer the client (Respond).
type HTTPVerdict struct {
	respond bool
	status  uint16
	headers Fields   // to set; or the response's headers
	removes []string // to remove
	hasBody bool
	body    []byte
}

// Continue forwards the message; the changes made to the verdict apply.
func Continue() *HTTPVerdict { return &HTTPVerdict{} }

// Respond stops processing and answers the client with status and body.
func Respond(status uint16, body []byte) *HTTPVerdict {
	return &HTTPVerdict{respond: true, status: status, body: body}
}

// SetHeader sets a header, replacing any of the same name (Continue), or adds one to the
// answer (Respond).
func (v *HTTPVerdict) SetHeader(name string, value []byte) *HTTPVerdict {
	v.headers = append(v.headers, Field{name, value})
	return v
}

// RemoveHeader removes a header (Continue only).
func (v *HTTPVerdict) RemoveHeader(name string) *HTTPVerdict {
	v.removes = append(v.removes, name)
	return v
}

// SetBody replaces the body, or the body chunk being processed (Continue), or sets the
// answer's body (Respond).
func (v *HTTPVerdict) SetBody(body []byte) *HTTPVerdict {
	v.hasBody, v.body = true, body
	return v
}

// HTTPFilter handles one HTTP request's events. Embed HTTPDefaults to implement only some.
type HTTPFilter interface {
	OnOpen(info *StreamInfo) *HTTPVerdict
	OnHeaders(direction Direction, headers Fields, endOfStream bool) *HTTPVerdict
	OnBody(direction Direction, body []byte, endOfStream bool) *HTTPVerdict
	OnTrailers(direction Direction, trailers Fields) *HTTPVerdict
}

// HTTPDefaults forwards everything; embed it and override the events the manifest names.
type HTTPDefaults struct{}

func (HTTPDefaults) OnOpen(*StreamInfo) *HTTPVerdict                { return Continue() }
func (HTTPDefaults) OnHeaders(Direction, Fields, bool) *HTTPVerdict { return Continue() }
func (HTTPDefaults) OnBody(Direction, []byte, bool) *HTTPVerdict    { return Continue() }
func (HTTPDefaults) OnTrailers(Direction, Fields) *HTTPVerdict      { return Continue() }

var (
	tcpFilter  TCPFilter  = TCPDefaults{}
	httpFilter HTTPFilter = HTTPDefaults{}
)

// HandleTCP makes filter handle the plugin's TCP events; call it from an init function.
func HandleTCP(filter TCPFilter) { tcpFilter = filter }

// HandleHTTP makes filter handle the plugin's HTTP events; call it from an init function.
func HandleHTTP(filter HTTPFilter) { httpFilter = filter }
