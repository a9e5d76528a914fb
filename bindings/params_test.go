package bindings

import "testing"

// TestDefaultsProbe: the default-params calls fill exactly the loaded
// release's fields, and a table that says otherwise (a struct that ends
// earlier or later) is refused rather than used.
func TestDefaultsProbe(t *testing.T) {
	path, _ := Locate("", OSEnv())
	if path == "" {
		t.Skip("no libllama installed")
	}
	lib, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []struct {
		fn uintptr
		st *cStruct
	}{{lib.params.modelDefaults, lib.params.model}, {lib.params.contextDefaults, lib.params.context}} {
		raw, err := defaults(s.fn, s.st)
		if err != nil || uintptr(len(raw)) != s.st.Size {
			t.Errorf("%s: %d bytes, %v", s.st.Name, len(raw), err)
		}
		for _, end := range []uintptr{s.st.end - 4, s.st.end + 8} {
			wrong := *s.st
			wrong.end = end
			if _, err := defaults(s.fn, &wrong); err == nil {
				t.Errorf("%s: a table whose fields end at %d, not %d, was accepted", s.st.Name, end, s.st.end)
			}
		}
	}
}
