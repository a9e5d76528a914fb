package bindings

import (
	"unsafe"

	"github.com/ebitengine/purego"
)

// unsafePointer turns a typed pointer into the void* a C call takes.
func unsafePointer[T any](p *T) unsafe.Pointer { return unsafe.Pointer(p) }

// puregoCallback makes a C function pointer that calls fn.
func puregoCallback(fn any) uintptr { return purego.NewCallback(fn) }
