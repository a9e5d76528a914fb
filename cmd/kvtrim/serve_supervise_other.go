//go:build !linux

package main

import "syscall"

// workerAttr is nothing where the parent's death cannot be signalled.
func workerAttr() *syscall.SysProcAttr { return nil }
