package bindings_test

import (
	"testing"

	"github.com/kvtrim/kvtrim/bindings"
)

// TestLazyGrammar: a lazy grammar lets anything through until its
// trigger word is written, then holds the rest to the grammar. The draws
// are greedy over made-up logits that favour the text the test wants
// written, one byte token at a time.
func TestLazyGrammar(t *testing.T) {
	lib, m := loadStories(t)
	v := m.Vocab()
	byByte := map[byte]bindings.Token{}
	for tok := range bindings.Token(v.NTokens()) {
		if p := v.Piece(tok, false); len(p) == 1 {
			if _, ok := byByte[p[0]]; !ok {
				byByte[p[0]] = tok
			}
		}
	}
	const grammar = `root ::= "<call>" [0-9]+ "</call>"`
	s := lib.NewSampler(bindings.SamplerOptions{Temp: 0, Grammar: grammar, Vocab: v, GrammarTriggers: []string{bindings.TriggerWord("<call>")}})
	defer s.Close()
	logits := make([]float32, v.NTokens())
	// draw favours byte b, with every other token far below.
	draw := func(b byte) byte {
		t.Helper()
		for i := range logits {
			logits[i] = -100
		}
		logits[byByte[b]] = 10
		logits[byByte['7']] = 5 // the runner-up, a digit
		tok, err := s.SampleLogits(logits)
		if err != nil {
			t.Fatal(err)
		}
		p := v.Piece(tok, false)
		if len(p) != 1 {
			t.Fatalf("drew %q", p)
		}
		return p[0]
	}
	// Before the trigger: anything, the letters included.
	for _, b := range []byte("Hi x <call>") {
		if got := draw(b); got != b {
			t.Fatalf("before the trigger, %q drew %q", b, got)
		}
	}
	// After it: the grammar wants digits, so x gives way to 7.
	if got := draw('x'); got != '7' {
		t.Errorf("after the trigger, x drew %q, want the grammar's 7", got)
	}
	if got := draw('3'); got != '3' {
		t.Errorf("after the trigger, 3 drew %q", got)
	}
}
