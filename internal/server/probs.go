package server

import (
	"cmp"
	"slices"
	"unicode/utf8"

	"github.com/kvtrim/kvtrim"
	"github.com/kvtrim/kvtrim/bindings"
	"github.com/kvtrim/kvtrim/policies"
)

// tokenProb is one generated token's entry of llama-server's
// completion_probabilities (and of OpenAI's logprobs.content): its
// log-probability before sampling, and the n_probs most likely tokens'.
type tokenProb struct {
	ID      kvtrim.Token `json:"id"`
	Token   string       `json:"token"`
	Bytes   []int        `json:"bytes"`
	Logprob float64      `json:"logprob"`
	Top     []topProb    `json:"top_logprobs"`
}

// topProb is one of the most likely tokens at a step.
type topProb struct {
	ID      kvtrim.Token `json:"id"`
	Token   string       `json:"token"`
	Bytes   []int        `json:"bytes"`
	Logprob float64      `json:"logprob"`
}

// logprobsObject is OpenAI's choice.logprobs.
type logprobsObject struct {
	Content []tokenProb `json:"content"`
}

// maxProbs bounds n_probs and top_logprobs.
const maxProbs = 100

// probsOf is the entry of token t sampled from logits (a vocabulary's
// worth): the log-softmax of t and of the n largest logits, largest first,
// as llama-server computes them (over the raw logits, before sampling).
func probsOf(vocab *bindings.Vocab, t kvtrim.Token, logits []float32, n int) tokenProb {
	logZ := policies.LogSumExp(logits)
	logprob := func(id kvtrim.Token) float64 { return float64(logits[id]) - logZ }
	p := tokenProb{ID: t, Logprob: logprob(t)}
	p.Token, p.Bytes = pieceOf(vocab, t)
	for _, id := range topTokens(logits, n) {
		tp := topProb{ID: id, Logprob: logprob(id)}
		tp.Token, tp.Bytes = pieceOf(vocab, id)
		p.Top = append(p.Top, tp)
	}
	if p.Top == nil {
		p.Top = []topProb{}
	}
	return p
}

// topTokens is the ids of the n largest logits, largest first (ties by
// id).
func topTokens(logits []float32, n int) []kvtrim.Token {
	idx := policies.TopK(logits, n) // the lowest ids among ties
	slices.SortFunc(idx, func(a, b int) int {
		if c := cmp.Compare(logits[b], logits[a]); c != 0 {
			return c
		}
		return a - b
	})
	top := make([]kvtrim.Token, len(idx))
	for i, id := range idx {
		top[i] = kvtrim.Token(id)
	}
	return top
}

// pieceOf is a token's text, cut before an incomplete UTF-8 sequence at
// its end as llama-server does, and its bytes, whole.
func pieceOf(vocab *bindings.Vocab, t kvtrim.Token) (string, []int) {
	piece := vocab.Piece(t, false)
	bytes := make([]int, len(piece))
	for i := range len(piece) {
		bytes[i] = int(piece[i])
	}
	return validUTF8Prefix(piece), bytes
}

// validUTF8Prefix drops an incomplete multi-byte sequence at the end of s.
func validUTF8Prefix(s string) string {
	for cut := 0; cut < 4 && cut < len(s); cut++ {
		if utf8.ValidString(s[:len(s)-cut]) {
			return s[:len(s)-cut]
		}
	}
	return s
}
