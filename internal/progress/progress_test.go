package progress

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

func TestBarOnATerminal(t *testing.T) {
	var term bytes.Buffer
	b := New("passkey", 3, &term, zerolog.Nop())
	for i := range 3 {
		b.Step(strings.Repeat("x", 3-i))
	}
	b.Finish()
	out := term.String()
	if !strings.Contains(out, "\rpasskey [") || !strings.Contains(out, "3/3") || !strings.HasSuffix(out, "\n") {
		t.Errorf("terminal output %q: want a redrawn bar ending 3/3 and a newline", out)
	}
	if !strings.Contains(out, "left") {
		t.Errorf("terminal output %q has no time left", out)
	}
}

func TestBarAsLogLines(t *testing.T) {
	var logs bytes.Buffer
	b := New("bench", 2, nil, zerolog.New(&logs))
	b.Step("rep 1")
	b.Step("rep 2")
	b.Finish()
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %d log lines, want one per step: %q", len(lines), logs.String())
	}
	var last struct {
		Done, Total int
		Message     string
	}
	if err := json.Unmarshal([]byte(lines[1]), &last); err != nil {
		t.Fatal(err)
	}
	if last.Done != 2 || last.Total != 2 || !strings.Contains(last.Message, "rep 2") {
		t.Errorf("last line %+v", last)
	}
}
