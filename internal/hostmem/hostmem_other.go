//go:build !unix

package hostmem

import "fmt"

func alloc(n int) ([]byte, error) {
	if n <= 0 {
		return nil, fmt.Errorf("allocate %d bytes: not a size", n)
	}
	return make([]byte, n), nil
}

func free([]byte) error { return nil }

func shrink(b []byte, n int) []byte { return b[:n] }
