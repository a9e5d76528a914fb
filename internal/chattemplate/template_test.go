package chattemplate

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/kvtrim/kvtrim/internal/testenv"
)

// TestJinjaMatchesLlamaServer renders the conversation of
// testdata/templates/conversation.json with each chat template of the
// pinned llama.cpp source and compares the prompt with the one
// llama-server 0.5.0 rendered with --jinja (testdata/templates/record.sh,
// on the day in recorded-on, for strftime_now).
func TestJinjaMatchesLlamaServer(t *testing.T) {
	dir := filepath.Join(testenv.RepoRoot(), "testdata", "templates")
	var want map[string]*string
	b, err := os.ReadFile(filepath.Join(dir, "rendered.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	day, err := os.ReadFile(filepath.Join(dir, "recorded-on"))
	if err != nil {
		t.Fatal(err)
	}
	now, err := time.Parse("2006-01-02", strings.TrimSpace(string(day)))
	if err != nil {
		t.Fatal(err)
	}
	var conv struct{ Messages []Message }
	b, _ = os.ReadFile(filepath.Join(dir, "conversation.json"))
	if err := json.Unmarshal(b, &conv); err != nil {
		t.Fatal(err)
	}
	src := testenv.LlamaSource(t)
	names := make([]string, 0, len(want))
	for n := range want {
		names = append(names, n)
	}
	sort.Strings(names)
	match := 0
	for _, name := range names {
		source, err := os.ReadFile(filepath.Join(src, "models", "templates", name+".jinja"))
		if err != nil {
			t.Fatal(err)
		}
		tmpl, err := Compile(string(source), "<s>", "</s>", true)
		var got string
		if err == nil {
			got, err = tmpl.Render(Input{Messages: conv.Messages, AddGenerationPrompt: true, Now: now})
		}
		switch {
		case err == nil && got == *want[name]:
			match++
		case err != nil:
			t.Errorf("%s: %v", name, err)
		default:
			t.Errorf("%s: differs from llama-server's\n got %q\nwant %q", name, got, *want[name])
		}
	}
	t.Logf("%d of %d templates render as llama-server's", match, len(names))
}

// TestStrftime checks the directives chat templates use against Python's
// strftime output for the same instant.
func TestStrftime(t *testing.T) {
	tm := time.Date(2026, time.March, 7, 15, 4, 5, 0, time.UTC)
	for format, want := range map[string]string{
		"%d %b %Y":          "07 Mar 2026", // Llama 3.x's date_string
		"%Y-%m-%d %H:%M:%S": "2026-03-07 15:04:05",
		"%A, %B %e, %y":     "Saturday, March  7, 26",
		"%I %p, day %j":     "03 PM, day 066",
		"100%% %q":          "100% %q", // an unknown directive stays as written
		"trailing %":        "trailing %",
	} {
		if got := Strftime(tm, format); got != want {
			t.Errorf("Strftime(%q) = %q, want %q", format, got, want)
		}
	}
}
