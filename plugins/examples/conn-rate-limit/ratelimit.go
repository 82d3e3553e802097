// conn-rate-limit: a fixed-window limit on TCP connections per source IP address, counted
// with shared-state's atomic increment. The first connection of a window creates the
// address's counter with the window as its time to live; later ones add to it until it
// expires.
package main

import (
	"math"
	"strconv"

	"hyperfilter.local/hyperfilter"
)

type limiter struct{ hyperfilter.TCPDefaults }

// number reads a whole number from the plugin's [config]; a bad one stops the plugin (its
// failure policy applies) with a message naming the key.
func number(key string, fallback, highest uint64) uint64 {
	text, ok := hyperfilter.Config(key)
	if !ok || text == "" {
		return fallback
	}
	value, err := strconv.ParseUint(text, 10, 64)
	if err != nil || value == 0 || value > highest {
		panic("config `" + key + "` must be a whole number from 1 to " +
			strconv.FormatUint(highest, 10) + ", not " + strconv.Quote(text))
	}
	return value
}

func (limiter) OnOpen(info *hyperfilter.StreamInfo) hyperfilter.TCPVerdict {
	// Read on each connection: a sandbox lives for one, and the configuration is the host's.
	limit := number("limit", 20, math.MaxInt64)
	window := number("window-ms", 1000, math.MaxUint32)
	ip := info.SourceIP()
	count, err := hyperfilter.StateIncrement("conn:"+ip, 1, uint32(window))
	if err != nil {
		hyperfilter.Log(hyperfilter.Warn, "cannot count "+ip+" ("+err.Error()+"): closing")
		return closed()
	}
	if uint64(count) > limit {
		if uint64(count) == limit+1 { // once per window and address
			hyperfilter.Log(hyperfilter.Warn, "closing connections from "+ip+": more than "+
				strconv.FormatUint(limit, 10)+" in "+strconv.FormatUint(window, 10)+" ms")
		}
		return closed()
	}
	return hyperfilter.Forward()
}

func closed() hyperfilter.TCPVerdict {
	hyperfilter.CounterAdd("closed", 1)
	return hyperfilter.Close()
}

func init() { hyperfilter.HandleTCP(limiter{}) }

func main() {}
