package server

import (
	"cmp"
	"encoding/json"
	"slices"
	"unicode/utf8"

	"github.com/kvtrim/kvtrim"
	"github.com/kvtrim/kvtrim/bindings"
	"github.com/kvtrim/kvtrim/policies"
)

// tokenProb is one generated token's entry of llama-server's
// completion_probabilities (and of OpenAI's logprobs.content): its
// log-probability before sampling, and the n_probs most likely tokens';
// or, with post_sampling_probs, their probabilities after the sampler
// chain, under llama-server's other names (prob, top_probs).
type tokenProb struct {
	ID      kvtrim.Token `json:"id"`
	Token   string       `json:"token"`
	Bytes   []int        `json:"bytes"`
	Logprob float64      `json:"logprob"`
	Top     []topProb    `json:"top_logprobs"`
	post    bool
}

// topProb is one of the most likely tokens at a step.
type topProb struct {
	ID      kvtrim.Token `json:"id"`
	Token   string       `json:"token"`
	Bytes   []int        `json:"bytes"`
	Logprob float64      `json:"logprob"`
}

// postTokenProb and postTopProb are tokenProb and topProb as
// post-sampling probabilities, with their Logprob fields holding
// probabilities.
type postTokenProb struct {
	ID    kvtrim.Token  `json:"id"`
	Token string        `json:"token"`
	Bytes []int         `json:"bytes"`
	Prob  float64       `json:"prob"`
	Top   []postTopProb `json:"top_probs"`
}

type postTopProb struct {
	ID    kvtrim.Token `json:"id"`
	Token string       `json:"token"`
	Bytes []int        `json:"bytes"`
	Prob  float64      `json:"prob"`
}

// MarshalJSON writes p under llama-server's names for its kind.
func (p tokenProb) MarshalJSON() ([]byte, error) {
	if !p.post {
		type plain tokenProb // without this method
		return json.Marshal(plain(p))
	}
	out := postTokenProb{ID: p.ID, Token: p.Token, Bytes: p.Bytes, Prob: p.Logprob, Top: make([]postTopProb, len(p.Top))}
	for i, t := range p.Top {
		out.Top[i] = postTopProb{ID: t.ID, Token: t.Token, Bytes: t.Bytes, Prob: t.Logprob}
	}
	return json.Marshal(out)
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

// postSamplingProbsOf is the entry of token t drawn from candidates (the
// sampler chain's, most probable first, none of probability 0): t's
// probability among them and the first n's, as llama-server computes
// post-sampling probabilities. A token the chain dropped has probability
// 1, llama-server's default.
func postSamplingProbsOf(vocab *bindings.Vocab, t kvtrim.Token, candidates []bindings.TokenData, n int) tokenProb {
	p := tokenProb{ID: t, Logprob: 1, post: true, Top: []topProb{}}
	p.Token, p.Bytes = pieceOf(vocab, t)
	for i, c := range candidates {
		if c.ID == t {
			p.Logprob = float64(c.P)
		}
		if i < n {
			tp := topProb{ID: c.ID, Logprob: float64(c.P)}
			tp.Token, tp.Bytes = pieceOf(vocab, c.ID)
			p.Top = append(p.Top, tp)
		}
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
