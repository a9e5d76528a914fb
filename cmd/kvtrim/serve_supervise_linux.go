package main

import "syscall"

// workerAttr has the model's process end with the server, however the
// server ends.
func workerAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
