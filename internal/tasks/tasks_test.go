package tasks

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kvtrim/kvtrim/internal/testenv"
)

func TestPasskey(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, length := range []int{256, 512, 1000} {
		for _, depth := range []float64{0, 0.5, 1} {
			p := Passkey(r, length, depth)
			// Character-level model: tokens = characters + 2 (BOS, space).
			if n := len(p.Text) + 2; n > length || n < length-80 {
				t.Errorf("length %d depth %g: %d tokens", length, depth, n)
			}
			needle := "The pass key is " + p.Answer + ". Remember it. " + p.Answer + " is the pass key."
			if strings.Count(p.Text, needle) != 1 || !strings.HasSuffix(p.Text, "What is the pass key? The pass key is") {
				t.Fatalf("prompt lacks the needle or question:\n%s", p.Text)
			}
			// Depth is the share of the filler before the needle, to within
			// one sentence (at most about 50 characters).
			question := "What is the pass key? The pass key is"
			filler := len(p.Text) - len(needle) - len(question) - 2
			at := float64(strings.Index(p.Text, needle)) / float64(filler)
			if slack := 50 / float64(filler); at < depth-slack || at > depth+slack {
				t.Errorf("length %d depth %g: needle after %.2f of the filler", length, depth, at)
			}
			if len(p.Answer) != 5 || !p.Correct(" "+p.Answer+".") || p.Correct(" 1234") {
				t.Errorf("answer %q", p.Answer)
			}
		}
	}
}

func TestLines(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	p := Lines(r, 512, 4, 0.5)
	if n := strings.Count(p.Text, "REGISTER_CONTENT is <"); n != 4 {
		t.Errorf("%d lines", n)
	}
	if !strings.Contains(p.Text, "REGISTER_CONTENT is <"+p.Answer+">.") || !p.Correct(" <"+p.Answer+">.") {
		t.Errorf("answer %q not in the prompt or not accepted", p.Answer)
	}
	if len(p.Text)+2 > 512 {
		t.Errorf("%d tokens", len(p.Text)+2)
	}
}

// TestCorrectIsExact: an answer counts only when the generated text starts
// with every digit of the key, as the model writes it; a key one digit off,
// a key cut short, the key later in the text, or the digits of another line
// are wrong.
func TestCorrectIsExact(t *testing.T) {
	p := Prompt{Answer: "04213"}
	for gen, want := range map[string]bool{
		" 04213.":            true,
		" 04213":             true,
		"04213 is the key":   true,
		" <04213>.":          true,
		" 04214.":            false,
		" 4213.":             false,
		" 0421":              false,
		" the key is 04213.": false,
		" 14213.":            false,
		"":                   false,
		" <04203>. <04213>.": false,
	} {
		if got := p.Correct(gen); got != want {
			t.Errorf("Correct(%q) = %v, want %v", gen, got, want)
		}
	}
}

func TestRecallScoring(t *testing.T) {
	r := Recall{Keys: []string{"swan", "feather", "zebra"}, Answers: []string{"55", "30", "64"}}
	for out, want := range map[string]bool{
		" swan 55, feather 30, zebra 64.": true,
		" swan 55, feather 30, zebra 64,": true, // punctuation aside
		" swan 55, feather 30, zebra 46.": false,
		" swan 55, zebra 64, feather 30.": false, // out of order
		" swan 55, feather 30":            false,
		" parrot lamp 96, lamp 96":        false,
	} {
		if got := r.Correct(out); got != want {
			t.Errorf("%q: %v, want %v", out, got, want)
		}
	}
}

func TestReadRecallPublicSet(t *testing.T) {
	path := filepath.Join(testenv.RepoRoot(), "..", "shared", "models", "recall", "public.jsonl")
	if _, err := os.Stat(path); err != nil {
		t.Skipf("no public recall set: %v", err)
	}
	set, err := ReadRecall(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range set {
		if r.Questions() < 1 || r.Questions() > 4 || r.Tokens < 400 || !r.Correct(r.Expected) {
			t.Errorf("prompt of %d tokens with %d questions: its expected answer %q scores wrong", r.Tokens, r.Questions(), r.Expected)
		}
	}
	if len(set) != 30 {
		t.Errorf("%d prompts, RECALL.md says 30", len(set))
	}
}
