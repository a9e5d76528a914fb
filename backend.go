package kvtrim

import (
	"github.com/kvtrim/kvtrim/bindings"
)

// backend is where a session's sequence lives and how its decodes run. A
// session has a context of its own (ownBackend) or is a member of a Group,
// one sequence of a shared context whose decoder batches every member's
// decodes (memberBackend). A context that another program made and
// decodes is the third kind to come; the methods are what a session needs
// of any of them.
type backend interface {
	// cells is the most cells the session's sequence may hold.
	cells() int
	// locked runs f, which uses the context other than to decode
	// (removing or shifting cells, saving or loading state).
	locked(f func())
	// chunk is the most prompt tokens one decode may carry.
	chunk() int
	// start decodes tokens at positions from pos0 into the sequence,
	// asking for the last one's logits when logits is set. A member's
	// decode runs in the group's round while the caller goes on; a
	// context of the session's own decodes when the caller waits, on the
	// caller's thread (so a step's decode follows its emit, as it did).
	start(tokens []Token, pos0 int32, logits bool) pendingDecode
	// logits is the last decoded token's logits.
	logits() []float32
	// sample picks the next token from them.
	sample(sampler *bindings.Sampler) (Token, error)
	// ownThread says decodes run on the caller's OS thread, which the
	// session then locks while it prefills and generates (llama.cpp's CPU
	// threads belong to the thread that calls llama_decode).
	ownThread() bool
	// shared says other sequences share the context: llama.cpp's perf
	// counters count their work too, and a whole text cannot be scored.
	shared() bool
	// idle says no decode is coming soon.
	idle()
	// close frees the sequence, and the context when it is the session's.
	close()
}

// pendingDecode is a started decode; wait returns its error.
type pendingDecode interface{ wait() error }

// ownDecode is a decode in the session's own context, run by wait.
type ownDecode struct {
	s      *Session
	tokens []Token
	pos0   int32
	logits bool
}

func (d ownDecode) wait() error {
	s := d.s
	s.batch.Clear()
	seqs := []bindings.SeqID{s.seq}
	for j, t := range d.tokens {
		s.batch.Add(t, d.pos0+int32(j), seqs, d.logits && j == len(d.tokens)-1)
	}
	return s.ctx.Decode(s.batch)
}

// ownBackend is a context of the session's own, decoded on the session's
// thread.
type ownBackend struct {
	s *Session
}

func (b ownBackend) cells() int        { return b.s.ctx.NCtx() }
func (b ownBackend) locked(f func())   { f() }
func (b ownBackend) chunk() int        { return min(b.s.ctx.NBatch(), b.s.batch.Cap()) }
func (b ownBackend) logits() []float32 { return b.s.ctx.Logits(-1) }
func (b ownBackend) ownThread() bool   { return true }
func (b ownBackend) shared() bool      { return false }
func (b ownBackend) idle()             {}

func (b ownBackend) start(tokens []Token, pos0 int32, logits bool) pendingDecode {
	return ownDecode{s: b.s, tokens: tokens, pos0: pos0, logits: logits}
}

// sample draws from the context's logits through SampleLogits, as
// llama_sampler_sample would, so that the chain's candidates stay readable
// (Sampler.Candidates).
func (b ownBackend) sample(sampler *bindings.Sampler) (Token, error) {
	return sampler.SampleLogits(b.s.ctx.Logits(-1))
}

func (b ownBackend) close() {
	b.s.ctx.Close()
	b.s.release()
}

// memberBackend is a Group member: its decodes go to the group's decoder,
// which copies out the logits the member asked for.
type memberBackend struct {
	s *Session
	g *Group
}

func (b memberBackend) cells() int        { return b.g.seqCtx }
func (b memberBackend) locked(f func())   { b.g.locked(f) }
func (b memberBackend) chunk() int        { return b.g.chunk() }
func (b memberBackend) logits() []float32 { return b.s.logits }
func (b memberBackend) shared() bool      { return true }
func (b memberBackend) idle()             { b.g.idle(b.s.seq) }
func (b memberBackend) close()            { b.g.leave(b.s.seq) }

// ownThread is false: a member's decodes run on the group's decoder
// thread, so the member must not hold an OS thread of its own (waking it
// would wait for that thread to be scheduled).
func (b memberBackend) ownThread() bool { return false }

// start queues the tokens for the group's next round.
func (b memberBackend) start(tokens []Token, pos0 int32, logits bool) pendingDecode {
	// A chunk that asks for no logits is a prompt's, and its next one
	// follows (Session.decode).
	r := &decodeRequest{seq: b.s.seq, tokens: tokens, pos0: pos0, logits: logits, out: b.s.logits, follows: !logits}
	b.g.submit(r)
	return memberDecode{b.s, r}
}

func (b memberBackend) sample(sampler *bindings.Sampler) (Token, error) {
	return sampler.SampleLogits(b.s.logits)
}

// memberDecode is a member's request in the group's queue.
type memberDecode struct {
	s *Session
	r *decodeRequest
}

// wait waits for the round, and keeps the logits, when the request asked
// for them, as the member's.
func (d memberDecode) wait() error {
	<-d.r.done
	if d.r.err == nil && d.r.logits {
		d.s.logits = d.r.out
	}
	return d.r.err
}
