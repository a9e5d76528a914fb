package bindings

import "syscall"

// threadID is the calling OS thread's id, which tells apart llama.cpp's log
// lines from concurrent calls.
func threadID() int { return syscall.Gettid() }
