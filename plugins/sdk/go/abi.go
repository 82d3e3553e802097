package hyperfilter

// The canonical-ABI lowering of the world's exports (plugins/wit/hyperfilter.wit) for wasm32:
// pointers and lengths are 4 bytes; the comments name each offset so they can be checked
// against the WIT. plugins/sdk/c/hyperfilter.c is the same lowering in C.

import "unsafe"

// Memory the host filled (cabi_realloc) or reads (a verdict's bytes) is kept reachable here
// until the next event begins: its first argument allocated through cabi_realloc, or its
// export called. Go's collector does not move objects, so an address handed to the host stays
// good while the object is reachable. Released then, rather than in cabi_post_* exports, it
// costs the host no call after each event.
var (
	retained       []any
	verdictPending bool
)

func nextEvent() {
	if verdictPending {
		clear(retained)
		retained = retained[:0]
		verdictPending = false
	}
}

func retain(object any) { retained = append(retained, object) }

//go:wasmexport cabi_realloc
func cabiRealloc(old, oldSize, align, newSize uint32) uint32 {
	nextEvent()
	// Words, so that every alignment the world uses (at most 8) holds.
	words := make([]uint64, (newSize+7)/8+1)
	retain(words)
	ptr := unsafe.Pointer(&words[0])
	if old != 0 && oldSize != 0 {
		copy(unsafe.Slice((*byte)(ptr), newSize), bytesAt(old, min(oldSize, newSize)))
	}
	return address(ptr)
}

func address(ptr unsafe.Pointer) uint32 { return uint32(uintptr(ptr)) }

// pointer turns an address in linear memory back into a pointer: valid only for memory this
// module allocated and still keeps reachable (retained, or the plugin's own objects).
func pointer(addr uint32) unsafe.Pointer {
	return unsafe.Add(unsafe.Pointer(nil), uintptr(addr))
}

func bytesAt(ptr, length uint32) []byte {
	if length == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(pointer(ptr)), length)
}

func stringAt(ptr, length uint32) string {
	if length == 0 {
		return ""
	}
	return unsafe.String((*byte)(pointer(ptr)), length)
}

func word(ptr uint32, index uint32) uint32 { return *(*uint32)(pointer(ptr + 4*index)) }

// A list of pairs is an array of 16-byte records: first (ptr @0, len @4), second (@8, @12).
func pairsAt(ptr, count uint32) [][4]uint32 {
	if count == 0 {
		return nil
	}
	return unsafe.Slice((*[4]uint32)(pointer(ptr)), count)
}

func lowerBytes(data []byte) (uint32, uint32) {
	if len(data) == 0 {
		return 0, 0
	}
	retain(data)
	return address(unsafe.Pointer(unsafe.SliceData(data))), uint32(len(data))
}

func lowerString(text string) (uint32, uint32) {
	if len(text) == 0 {
		return 0, 0
	}
	retain(text)
	return address(unsafe.Pointer(unsafe.StringData(text))), uint32(len(text))
}

// The return area: the largest verdict is the http-verdict's 32 bytes, 8-byte aligned.
var returnArea [4]uint64

func returnWords() *[8]uint32 {
	returnArea = [4]uint64{}
	return (*[8]uint32)(unsafe.Pointer(&returnArea))
}

func verdictOut() uint32 {
	verdictPending = true
	return address(unsafe.Pointer(&returnArea))
}

// tcp-verdict: tag u8 @0; replace, answer, answer-and-close: list<u8> ptr @4, len @8.
func lowerTCP(verdict TCPVerdict) uint32 {
	out := returnWords()
	out[0] = uint32(verdict.action)
	out[1], out[2] = lowerBytes(verdict.data)
	return verdictOut()
}

// fields: an array of records (name ptr @0, len @4, value ptr @8, len @12).
func lowerFields(fields Fields) (uint32, uint32) {
	if len(fields) == 0 {
		return 0, 0
	}
	records := make([][4]uint32, len(fields))
	for i, field := range fields {
		records[i][0], records[i][1] = lowerString(field.Name)
		records[i][2], records[i][3] = lowerBytes(field.Value)
	}
	retain(records)
	return address(unsafe.Pointer(&records[0])), uint32(len(records))
}

// list<string>: an array of records (ptr @0, len @4).
func lowerStrings(texts []string) (uint32, uint32) {
	if len(texts) == 0 {
		return 0, 0
	}
	records := make([][2]uint32, len(texts))
	for i, text := range texts {
		records[i][0], records[i][1] = lowerString(text)
	}
	retain(records)
	return address(unsafe.Pointer(&records[0])), uint32(len(records))
}

// http-verdict: tag u8 @0, payload @4.
// forward(mutation): set-headers @4/@8, remove-headers @12/@16, body option tag u8 @20,
// its list<u8> @24/@28. respond(immediate-response): status u16 @4, headers @8/@12, body
// @16/@20.
func lowerHTTP(verdict *HTTPVerdict) uint32 {
	if verdict == nil {
		verdict = Continue()
	}
	out := returnWords()
	if verdict.respond {
		out[0] = 1
		out[1] = uint32(verdict.status)
		out[2], out[3] = lowerFields(verdict.headers)
		out[4], out[5] = lowerBytes(verdict.body)
	} else {
		out[1], out[2] = lowerFields(verdict.headers)
		out[3], out[4] = lowerStrings(verdict.removes)
		if verdict.hasBody {
			out[5] = 1
			out[6], out[7] = lowerBytes(verdict.body)
		}
	}
	return verdictOut()
}

func liftFields(ptr, count uint32) Fields {
	records := pairsAt(ptr, count)
	fields := make(Fields, len(records))
	for i, r := range records {
		fields[i] = Field{stringAt(r[0], r[1]), bytesAt(r[2], r[3])}
	}
	return fields
}

// stream-info, flattened: source-address, destination-address, server-name (ptr, len each),
// metadata (ptr, len of an array of string pairs).
func liftInfo(srcPtr, srcLen, dstPtr, dstLen, sniPtr, sniLen, mdPtr, mdLen uint32) *StreamInfo {
	records := pairsAt(mdPtr, mdLen)
	metadata := make([]Pair, len(records))
	for i, r := range records {
		metadata[i] = Pair{stringAt(r[0], r[1]), stringAt(r[2], r[3])}
	}
	return &StreamInfo{stringAt(srcPtr, srcLen), stringAt(dstPtr, dstLen),
		stringAt(sniPtr, sniLen), metadata}
}

//go:wasmexport hyperfilter:plugin/tcp-filter@0.1.0#on-open
func exportTCPOpen(srcPtr, srcLen, dstPtr, dstLen, sniPtr, sniLen, mdPtr, mdLen uint32) uint32 {
	nextEvent()
	return lowerTCP(tcpFilter.OnOpen(liftInfo(srcPtr, srcLen, dstPtr, dstLen, sniPtr, sniLen,
		mdPtr, mdLen)))
}

//go:wasmexport hyperfilter:plugin/tcp-filter@0.1.0#on-data
func exportTCPData(direction, ptr, length, endOfStream uint32) uint32 {
	nextEvent()
	return lowerTCP(tcpFilter.OnData(Direction(direction), bytesAt(ptr, length),
		endOfStream != 0))
}

//go:wasmexport hyperfilter:plugin/tcp-filter@0.1.0#on-close
func exportTCPClose() {
	nextEvent()
	tcpFilter.OnClose()
	verdictPending = true // nothing the host reads: release what the event had
	nextEvent()
}

//go:wasmexport hyperfilter:plugin/http-filter@0.1.0#on-open
func exportHTTPOpen(srcPtr, srcLen, dstPtr, dstLen, sniPtr, sniLen, mdPtr, mdLen uint32) uint32 {
	nextEvent()
	return lowerHTTP(httpFilter.OnOpen(liftInfo(srcPtr, srcLen, dstPtr, dstLen, sniPtr, sniLen,
		mdPtr, mdLen)))
}

//go:wasmexport hyperfilter:plugin/http-filter@0.1.0#on-headers
func exportHTTPHeaders(direction, ptr, count, endOfStream uint32) uint32 {
	nextEvent()
	return lowerHTTP(httpFilter.OnHeaders(Direction(direction), liftFields(ptr, count),
		endOfStream != 0))
}

//go:wasmexport hyperfilter:plugin/http-filter@0.1.0#on-body
func exportHTTPBody(direction, ptr, length, endOfStream uint32) uint32 {
	nextEvent()
	return lowerHTTP(httpFilter.OnBody(Direction(direction), bytesAt(ptr, length),
		endOfStream != 0))
}

//go:wasmexport hyperfilter:plugin/http-filter@0.1.0#on-trailers
func exportHTTPTrailers(direction, ptr, count uint32) uint32 {
	nextEvent()
	return lowerHTTP(httpFilter.OnTrailers(Direction(direction), liftFields(ptr, count)))
}
