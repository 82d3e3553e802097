// ${name}: a hyperfilter plugin (a core module built by Go for wasip1). See the SDK's
// documentation: plugins/sdk/go/hyperfilter.go.
package main

import (
	"bytes"

	"hyperfilter.local/hyperfilter"
)

type tcpFilter struct{ hyperfilter.TCPDefaults }

func (tcpFilter) OnData(direction hyperfilter.Direction, data []byte, endOfStream bool) hyperfilter.TCPVerdict {
	if direction == hyperfilter.Inbound && bytes.Contains(data, []byte("forbidden")) {
		hyperfilter.Log(hyperfilter.Warn, "closing a connection")
		return hyperfilter.Close()
	}
	return hyperfilter.Forward()
}

type httpFilter struct{ hyperfilter.HTTPDefaults }

func (httpFilter) OnHeaders(direction hyperfilter.Direction, headers hyperfilter.Fields, endOfStream bool) *hyperfilter.HTTPVerdict {
	if _, blocked := headers.Get("x-block"); direction == hyperfilter.Inbound && blocked {
		return hyperfilter.Respond(403, []byte("blocked\n"))
	}
	return hyperfilter.Continue().SetHeader("x-greeting", []byte("hello"))
}

func init() {
	hyperfilter.HandleTCP(tcpFilter{})
	hyperfilter.HandleHTTP(httpFilter{})
}

// main is not called: the host calls the filters' methods, one event at a time.
func main() {}
