//go:build !linux

package bindings

// threadID is 0 where kvtrim does not read thread ids: llama.cpp's log lines
// of concurrent calls then share one state, and a failing call may quote
// another's error line.
func threadID() int { return 0 }
