package hostmem

import (
	"bytes"
	"testing"
)

// TestAllocShrinkFree: a buffer is zeroed and writable, keeps its head
// and the rest of its last page when shrunk, and is freed whole.
func TestAllocShrinkFree(t *testing.T) {
	const n = 5<<20 + 123
	b, err := Alloc(n)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != n || cap(b) < n {
		t.Fatalf("Alloc(%d): len %d, cap %d", n, len(b), cap(b))
	}
	if bytes.IndexFunc(b, func(r rune) bool { return r != 0 }) >= 0 {
		t.Fatal("new memory is not zeroed")
	}
	for i := range b {
		b[i] = byte(i)
	}
	s := Shrink(b, 1<<20+1)
	if len(s) != 1<<20+1 || cap(s) > cap(b) || cap(s) < len(s) {
		t.Fatalf("Shrink: len %d, cap %d (was %d)", len(s), cap(s), cap(b))
	}
	for i := range s {
		if s[i] != byte(i) {
			t.Fatalf("byte %d changed by Shrink", i)
		}
	}
	s = s[:cap(s)]
	s[len(s)-1] = 1 // the whole capacity is still mapped
	if err := Free(s); err != nil {
		t.Fatal(err)
	}
	if _, err := Alloc(0); err == nil {
		t.Error("Alloc(0) succeeded")
	}
}
