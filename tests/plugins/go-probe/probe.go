package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"hyperfilter.local/hyperfilter"
)

type probe struct{ hyperfilter.TCPDefaults }

// kept holds what "hog" allocates, so that the collector cannot free it.
var kept [][]byte

func (probe) OnData(_ hyperfilter.Direction, data []byte, _ bool) hyperfilter.TCPVerdict {
	command, argument, _ := strings.Cut(strings.TrimSpace(string(data)), " ")
	return hyperfilter.Replace([]byte(run(command, argument)))
}

func run(command, argument string) string {
	switch command {
	// capabilities, through the SDK
	case "config":
		if value, ok := hyperfilter.Config(argument); ok {
			return value
		}
		return "none"
	case "clock":
		wall, start := hyperfilter.Now(), hyperfilter.Monotonic()
		if wall > 1_600_000_000_000_000_000 && hyperfilter.Monotonic() >= start {
			return "ok"
		}
		return "bad clock"
	case "random":
		n, _ := strconv.Atoi(argument)
		return hex.EncodeToString(hyperfilter.RandomBytes(uint32(n)))
	case "count":
		total, err := hyperfilter.StateIncrement(argument, 1, 60_000)
		if err != nil {
			return err.Error()
		}
		return strconv.FormatInt(total, 10)
	case "get":
		if value, ok := hyperfilter.StateGet(argument); ok {
			return string(value)
		}
		return "none"
	case "set":
		key, value, _ := strings.Cut(argument, " ")
		if errors.Is(hyperfilter.StateSet(key, []byte(value), 0), hyperfilter.ErrQuotaExceeded) {
			return "quota"
		}
		return "ok"
	case "del":
		hyperfilter.StateDelete(argument)
		return "ok"
	case "metric":
		hyperfilter.CounterAdd("hits", 1)
		hyperfilter.GaugeSet("level", -7)
		return "ok"
	case "log":
		hyperfilter.Log(hyperfilter.Info, "probe says "+argument)
		return "ok"
	// what Go's runtime and standard library get from WASI
	case "open":
		file, err := os.Open(argument)
		if err == nil {
			file.Close()
			return "opened"
		}
		return "error: " + err.Error()
	case "create":
		if err := os.WriteFile(argument, []byte("x"), 0o600); err != nil {
			return "error: " + err.Error()
		}
		return "created"
	case "env":
		return "HOME=" + strconv.Quote(os.Getenv("HOME")) + " environ=" +
			strconv.Itoa(len(os.Environ()))
	case "args":
		return "args=" + strconv.Itoa(len(os.Args))
	case "stdin":
		read, err := io.ReadAll(os.Stdin)
		return "stdin=" + strconv.Itoa(len(read)) + " err=" + strconv.FormatBool(err != nil)
	case "stdout":
		os.Stdout.WriteString(argument + "\n")
		return "ok"
	case "stderr":
		os.Stderr.WriteString(argument + "\n")
		return "ok"
	case "time":
		if time.Now().Year() >= 2024 {
			return "ok"
		}
		return "bad time"
	case "cryptorand":
		buffer := make([]byte, 32)
		if _, err := rand.Read(buffer); err != nil {
			return "error: " + err.Error()
		}
		return hex.EncodeToString(buffer)
	case "sleep":
		ms, _ := strconv.Atoi(argument)
		start := time.Now()
		time.Sleep(time.Duration(ms) * time.Millisecond)
		return "slept " + strconv.FormatInt(time.Since(start).Milliseconds(), 10) + " ms"
	case "panic":
		panic(argument)
	case "exit":
		code, _ := strconv.Atoi(argument)
		os.Exit(code)
	case "hog":
		mib, _ := strconv.Atoi(argument)
		for range mib {
			kept = append(kept, make([]byte, 1<<20))
		}
		return "kept " + strconv.Itoa(len(kept)) + " MiB"
	}
	return "unknown command " + strconv.Quote(command)
}

func init() { hyperfilter.HandleTCP(probe{}) }

func main() {}
