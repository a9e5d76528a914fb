//go:build unix

package hostmem

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

var pageSize = os.Getpagesize()

func roundUp(n int) int { return (n + pageSize - 1) &^ (pageSize - 1) }

func alloc(n int) ([]byte, error) {
	if n <= 0 {
		return nil, fmt.Errorf("map %d bytes: not a size", n)
	}
	size := roundUp(n)
	p, err := unix.MmapPtr(-1, 0, nil, uintptr(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return nil, fmt.Errorf("map %d bytes: %w", n, err)
	}
	return unsafe.Slice((*byte)(p), size)[:n], nil
}

func free(b []byte) error {
	if cap(b) == 0 {
		return nil
	}
	if err := unix.MunmapPtr(unsafe.Pointer(unsafe.SliceData(b)), uintptr(cap(b))); err != nil {
		return fmt.Errorf("unmap %d bytes: %w", cap(b), err)
	}
	return nil
}

func shrink(b []byte, n int) []byte {
	keep := roundUp(n)
	if keep >= cap(b) {
		return b[:n]
	}
	if err := unix.MunmapPtr(unsafe.Add(unsafe.Pointer(unsafe.SliceData(b)), keep), uintptr(cap(b)-keep)); err != nil {
		return b[:n] // the tail stays mapped, and goes with the rest
	}
	return b[:n:keep]
}
