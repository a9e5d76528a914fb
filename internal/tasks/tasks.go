// Package tasks builds long-context retrieval prompts: the passkey task
// (a key hidden at a chosen depth in filler text) and LongEval-Lines-style
// multi-key lines, in the formats the retrieval test model was trained on
// (../shared/models/RETRIEVAL.md). Lengths are in characters, which for that
// character-level model are tokens minus two.
package tasks

import (
	"fmt"
	"math/rand/v2"
	"strings"
)

// Prompt is one retrieval question and its expected answer.
type Prompt struct {
	Text   string
	Answer string // the digits, e.g. "04213"
	Depth  float64
}

// Correct reports whether generated text starts with the answer, as the
// model writes it (" NNNNN" for passkey, " <NNNNN" for lines).
func (p Prompt) Correct(generated string) bool {
	g := strings.TrimLeft(generated, " <")
	return strings.HasPrefix(g, p.Answer)
}

var (
	classic = []string{"The grass is green.", "The sky is blue.", "The sun is yellow.", "Here we go.", "There and back again."}
	adjs    = []string{"big", "small", "red", "old", "young", "quiet", "happy", "brown", "cold", "warm", "tall", "slow"}
	nouns   = []string{"dog", "cat", "bird", "man", "woman", "tree", "boat", "house", "child", "horse", "farmer", "car"}
	verbs   = []string{"sees", "likes", "finds", "watches", "follows", "helps", "hears", "visits", "paints", "carries"}
	places  = []string{"in the park", "by the lake", "at home", "near the hill", "on the road", "in the town"}
	labels  = []string{"apple", "river", "stone", "cloud", "tiger", "lemon", "piano", "ocean", "maple", "robot",
		"candle", "forest", "silver", "rocket", "garden", "violet", "falcon", "copper", "meadow", "winter",
		"pepper", "island", "marble", "thunder"}
)

func pick(r *rand.Rand, s []string) string { return s[r.IntN(len(s))] }

// sentence is one random simple filler sentence.
func sentence(r *rand.Rand) string {
	switch r.IntN(3) {
	case 0:
		return fmt.Sprintf("The %s %s %s the %s %s.", pick(r, adjs), pick(r, nouns), pick(r, verbs), pick(r, nouns), pick(r, places))
	case 1:
		return fmt.Sprintf("A %s %s is %s.", pick(r, adjs), pick(r, nouns), pick(r, places))
	}
	return fmt.Sprintf("The %s %s the %s %s.", pick(r, nouns), pick(r, verbs), pick(r, adjs), pick(r, nouns))
}

// filler returns sentences of the mixed filler, about chars characters
// joined by spaces (runs of the classic passkey sentences and random ones).
func filler(r *rand.Rand, chars int) []string {
	var out []string
	total := 0
	for total < chars {
		var chunk []string
		if r.Float64() < 0.5 {
			chunk = classic[r.IntN(len(classic)):]
		} else {
			for range 1 + r.IntN(3) {
				chunk = append(chunk, sentence(r))
			}
		}
		for _, s := range chunk {
			if total+len(s)+1 > chars {
				return out
			}
			out = append(out, s)
			total += len(s) + 1
		}
	}
	return out
}

func key(r *rand.Rand) string { return fmt.Sprintf("%05d", r.IntN(100000)) }

func insertAt(sents []string, depth float64, items ...string) []string {
	k := int(depth*float64(len(sents)) + 0.5)
	k = min(max(k, 0), len(sents))
	out := append([]string(nil), sents[:k]...)
	out = append(out, items...)
	return append(out, sents[k:]...)
}

// Passkey builds a passkey prompt of about length tokens with the needle at
// depth (0: start, 1: just before the question).
func Passkey(r *rand.Rand, length int, depth float64) Prompt {
	k := key(r)
	needle := fmt.Sprintf("The pass key is %s. Remember it. %s is the pass key.", k, k)
	question := "What is the pass key? The pass key is"
	budget := length - 2 - len(needle) - len(question) - 2
	sents := insertAt(filler(r, budget), depth, needle)
	return Prompt{Text: strings.Join(append(sents, question), " "), Answer: k, Depth: depth}
}

// Lines builds a multi-key prompt of about length tokens with nLines lines
// spread through the filler, asking for the one at depth.
func Lines(r *rand.Rand, length, nLines int, depth float64) Prompt {
	perm := r.Perm(len(labels))
	type line struct{ label, value string }
	lines := make([]line, nLines)
	used := map[string]bool{}
	for i := range lines {
		for {
			a, b := labels[perm[r.IntN(len(perm))]], labels[perm[r.IntN(len(perm))]]
			if a != b && !used[a+"-"+b] {
				lines[i] = line{a + "-" + b, key(r)}
				used[a+"-"+b] = true
				break
			}
		}
	}
	target := lines[0]
	question := fmt.Sprintf("What is the REGISTER_CONTENT in line %s? It is", target.label)
	text := func(l line) string { return fmt.Sprintf("line %s: REGISTER_CONTENT is <%s>.", l.label, l.value) }
	budget := length - 2 - len(question) - 1
	for _, l := range lines {
		budget -= len(text(l)) + 1
	}
	sents := filler(r, budget)
	// The target at depth, the others at random places.
	sents = insertAt(sents, depth, text(target))
	for _, l := range lines[1:] {
		sents = insertAt(sents, r.Float64(), text(l))
	}
	return Prompt{Text: strings.Join(append(sents, question), " "), Answer: target.value, Depth: depth}
}
