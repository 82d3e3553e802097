package hyperfilter

// Capabilities: calling one makes the module import it, and the manifest must grant it
// (`[grants.<name>]`); a module importing an ungranted capability is refused at load.
// Results that do not fit one core value come back through a return area the host writes.

import (
	"errors"
	"unsafe"
)

// LogLevel is a log message's level.
type LogLevel uint32

const (
	Debug LogLevel = iota
	Info
	Warn
	Error
)

//go:wasmimport hyperfilter:plugin/log@0.1.0 log
func hostLog(level uint32, message string)

// Log writes one line to the sidecar's log, at the rate the `log` grant allows.
func Log(level LogLevel, message string) { hostLog(uint32(level), message) }

// option<string>, option<list<u8>>: tag u8 @0, ptr @4, len @8.
type optionArea [3]uint32

func (area *optionArea) bytes() ([]byte, bool) {
	if area[0]&0xff == 0 {
		return nil, false
	}
	return bytesAt(area[1], area[2]), true
}

//go:wasmimport hyperfilter:plugin/config@0.1.0 get
func hostConfigGet(key string, out unsafe.Pointer)

// Config is the value of key in the plugin's `[config]` (`config` grant).
func Config(key string) (string, bool) {
	var area optionArea
	hostConfigGet(key, unsafe.Pointer(&area))
	if area[0]&0xff == 0 {
		return "", false
	}
	return stringAt(area[1], area[2]), true
}

//go:wasmimport hyperfilter:plugin/clock@0.1.0 now
func hostClockNow() uint64

//go:wasmimport hyperfilter:plugin/clock@0.1.0 monotonic
func hostClockMonotonic() uint64

// Now is wall-clock time in nanoseconds since the Unix epoch (`clock` grant).
func Now() uint64 { return hostClockNow() }

// Monotonic is a monotonic time in nanoseconds, for measuring intervals (`clock` grant).
func Monotonic() uint64 { return hostClockMonotonic() }

//go:wasmimport hyperfilter:plugin/random@0.1.0 get-bytes
func hostRandomBytes(length uint32, out unsafe.Pointer)

// RandomBytes is length cryptographically secure random bytes, at most 4096 (`random` grant).
func RandomBytes(length uint32) []byte {
	var area [2]uint32 // list<u8>: ptr @0, len @4
	hostRandomBytes(length, unsafe.Pointer(&area))
	return bytesAt(area[0], area[1])
}

//go:wasmimport hyperfilter:plugin/metrics@0.1.0 add
func hostMetricAdd(name string, delta uint64)

//go:wasmimport hyperfilter:plugin/metrics@0.1.0 set
func hostMetricSet(name string, value int64)

// CounterAdd adds delta to a counter the `metrics` grant declares.
func CounterAdd(name string, delta uint64) { hostMetricAdd(name, delta) }

// GaugeSet sets a gauge the `metrics` grant declares.
func GaugeSet(name string, value int64) { hostMetricSet(name, value) }

// The shared-state errors (the WIT's state-error).
var (
	ErrQuotaExceeded = errors.New("shared-state: the grant's key count or byte quota would be exceeded")
	ErrNotANumber    = errors.New("shared-state: the value is not a decimal integer")
)

func stateError(code uint32) error {
	if code == 0 {
		return ErrQuotaExceeded
	}
	return ErrNotANumber
}

//go:wasmimport hyperfilter:plugin/shared-state@0.1.0 get
func hostStateGet(key string, out unsafe.Pointer)

//go:wasmimport hyperfilter:plugin/shared-state@0.1.0 set
func hostStateSet(key string, valuePtr, valueLen, ttlMs uint32, out unsafe.Pointer)

//go:wasmimport hyperfilter:plugin/shared-state@0.1.0 delete
func hostStateDelete(key string)

//go:wasmimport hyperfilter:plugin/shared-state@0.1.0 increment
func hostStateIncrement(key string, delta int64, ttlMs uint32, out unsafe.Pointer)

// StateGet is the value under key in the plugin's shared state (`shared-state` grant).
func StateGet(key string) ([]byte, bool) {
	var area optionArea
	hostStateGet(key, unsafe.Pointer(&area))
	return area.bytes()
}

// StateSet stores value under key; a ttlMs of 0 keeps it until deleted.
func StateSet(key string, value []byte, ttlMs uint32) error {
	var area [2]uint8 // result<_, state-error>: tag u8 @0, error u8 @1
	ptr, length := lowerBytes(value)
	hostStateSet(key, ptr, length, ttlMs, unsafe.Pointer(&area))
	if area[0] != 0 {
		return stateError(uint32(area[1]))
	}
	return nil
}

// StateDelete removes key.
func StateDelete(key string) { hostStateDelete(key) }

// StateIncrement adds delta to the decimal integer under key (0 when absent) and returns the
// sum, atomically across every sandbox of the plugin; ttlMs applies when the key is created.
func StateIncrement(key string, delta int64, ttlMs uint32) (int64, error) {
	var area [2]uint64 // result<s64, state-error>: tag u8 @0, payload @8
	hostStateIncrement(key, delta, ttlMs, unsafe.Pointer(&area))
	if area[0]&0xff != 0 {
		return 0, stateError(uint32(area[1] & 0xff))
	}
	return int64(area[1]), nil
}
