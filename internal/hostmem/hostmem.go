// Package hostmem holds large byte buffers outside Go's heap: mapped from
// the kernel and handed back to it the moment they are freed. A cache
// that bounds its bytes (the prompt cache's saved KV states) then bounds
// the process's memory too; on Go's heap, the bytes of dropped entries
// stay resident until the garbage collector runs, which with a heap of
// saved states can be when the heap has doubled.
//
// A buffer's capacity is its mapping, whole pages; Free hands back all of
// it. Nothing may use a buffer after it is freed.
package hostmem

// Alloc returns n zeroed bytes outside Go's heap (on Go's heap where the
// platform has no anonymous mappings). Free gives them back.
func Alloc(n int) ([]byte, error) { return alloc(n) }

// Free gives back a buffer from Alloc or Shrink, all of its capacity.
func Free(b []byte) error { return free(b) }

// Shrink keeps b's first n bytes and gives back the whole pages of its
// capacity after them, returning b[:n] with that smaller capacity. n must
// be at most cap(b).
func Shrink(b []byte, n int) []byte { return shrink(b, n) }
