package bindings

// Device is a compute device ggml found (a CPU, a GPU).
type Device struct {
	Name, Description string
}

// Backends lists the names of the ggml backends that are registered
// (for example "CPU", or "CUDA" in a CUDA build).
func (l *Library) Backends() []string {
	n := l.fn.ggmlBackendRegCount()
	out := make([]string, 0, n)
	for i := range n {
		out = append(out, l.fn.ggmlBackendRegName(l.fn.ggmlBackendRegGet(i)))
	}
	return out
}

// Devices lists the compute devices of all backends.
func (l *Library) Devices() []Device {
	n := l.fn.ggmlBackendDevCount()
	out := make([]Device, 0, n)
	for i := range n {
		d := l.fn.ggmlBackendDevGet(i)
		out = append(out, Device{l.fn.ggmlBackendDevName(d), l.fn.ggmlBackendDevDesc(d)})
	}
	return out
}

// SupportsGPUOffload reports whether the library can offload layers to a GPU.
func (l *Library) SupportsGPUOffload() bool { return l.fn.llamaSupportsGPUOffload() }

// SystemInfo is llama.cpp's summary of the CPU features it uses.
func (l *Library) SystemInfo() string { return l.fn.llamaPrintSystemInfo() }
