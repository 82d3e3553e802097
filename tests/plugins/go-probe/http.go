package main

import (
	"bytes"
	"slices"
	"strconv"
	"strings"

	"hyperfilter.local/hyperfilter"
)

// OnOpen answers a connection whose metadata asks with what it knows of the stream.
func (probe) OnOpen(info *hyperfilter.StreamInfo) hyperfilter.TCPVerdict {
	if _, asked := info.MetadataValue("x-probe-info"); !asked {
		return hyperfilter.Forward()
	}
	pairs := make([]string, len(info.Metadata))
	for i, pair := range info.Metadata {
		pairs[i] = pair.Key + "=" + pair.Value
	}
	return hyperfilter.Answer([]byte(strings.Join([]string{info.SourceAddress, info.SourceIP(),
		info.DestinationAddress, info.ServerName, strings.Join(pairs, ",")}, "|")))
}

type httpProbe struct{ hyperfilter.HTTPDefaults }

// OnHeaders answers 418 when asked to, else says what it saw and drops x-drop.
func (httpProbe) OnHeaders(_ hyperfilter.Direction, headers hyperfilter.Fields, _ bool) *hyperfilter.HTTPVerdict {
	if body, ok := headers.Get("x-probe-respond"); ok {
		return hyperfilter.Respond(418, body).SetHeader("x-probe", []byte("yes"))
	}
	path, _ := headers.Get(":path")
	return hyperfilter.Continue().SetHeader("x-path", path).
		SetHeader("x-headers", []byte(strconv.Itoa(len(headers)))).RemoveHeader("x-drop")
}

// OnBody passes the body on backwards, byte by byte.
func (httpProbe) OnBody(_ hyperfilter.Direction, body []byte, _ bool) *hyperfilter.HTTPVerdict {
	reversed := bytes.Clone(body)
	slices.Reverse(reversed)
	return hyperfilter.Continue().SetBody(reversed)
}

// OnTrailers counts them into a header.
func (httpProbe) OnTrailers(_ hyperfilter.Direction, trailers hyperfilter.Fields) *hyperfilter.HTTPVerdict {
	return hyperfilter.Continue().SetHeader("x-trailers", []byte(strconv.Itoa(len(trailers))))
}

func init() { hyperfilter.HandleHTTP(httpProbe{}) }
