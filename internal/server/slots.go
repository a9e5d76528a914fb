package server

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/kvtrim/kvtrim"
)

// pool is the slots and the bounded queue in front of them. Each slot's
// goroutine runs the jobs the pool hands it on its own session, a member
// of the pool's group: the group batches the slots' decodes into one
// llama_decode per step (continuous batching). A single slot has no group:
// its session has a context of its own and decodes on its own thread,
// without the hand-off to a decoder.
type pool struct {
	group   *kvtrim.Group // nil for a single slot
	slots   []*slot
	cache   *promptCache // nil: --cache-ram 0
	metrics *metrics
	log     zerolog.Logger

	// mu guards the queue, the free slots and the slots' histories while
	// they are free.
	mu        sync.Mutex
	waiting   []*job // queued, oldest first
	queueSize int    // the most requests that may wait (0: no bound)
	reuse     PromptReuse
	free      []*slot // idle slots, least recently used first
	closed    bool
	// meanJob is a moving mean of the time a slot takes for a request,
	// for the Retry-After of a full queue.
	meanJob time.Duration

	quit chan struct{}
	wg   sync.WaitGroup
	busy atomic.Int64 // slots running a job
	stop sync.Once
}

// slot is one sequence of the group and what /slots reports of it. Its
// session is only touched by the slot's goroutine (and by close, after
// that goroutine has ended).
type slot struct {
	id    int
	model *kvtrim.Model
	group *kvtrim.Group
	opt   kvtrim.SessionOptions // the default compression included
	nCtx  int
	jobs  chan *job // the job the pool gave this slot
	log   zerolog.Logger
	// cache is the pool's prompt cache (nil: --cache-ram 0).
	cache *promptCache
	// shift is whether generations shift the context when they fill
	// the slot (Config.ContextShift).
	shift bool

	sess  *kvtrim.Session
	comp  kvtrim.Compression // the compression sess was made with
	dirty bool               // sess has served a request since it was made or reset
	// history is the tokens sess has decoded, in position order (prompts
	// and generated tokens), while dirty.
	history []kvtrim.Token
	// observing is the pool's token for a compressed prefill's temporary
	// context (Session.PrefillsAside): one slot at a time holds one.
	observing chan struct{}

	busy atomic.Bool
	last atomic.Pointer[kvtrim.Stats] // the last request's compression stats
	// lastReq is the last request the slot took (its settings are /slots'
	// params), nil before the first.
	lastReq atomic.Pointer[Request]
}

// newPool makes n slots with a session each, members of a group of n
// sequences of opt.NCtx cells each when n > 1, and starts their
// goroutines.
func newPool(model *kvtrim.Model, n, queueSize int, reuse PromptReuse, shift bool, opt kvtrim.SessionOptions, m *metrics, log zerolog.Logger) (*pool, error) {
	var g *kvtrim.Group
	if n > 1 {
		gopt := opt
		gopt.NCtx = opt.NCtx * n
		var err error
		if g, err = model.NewGroup(gopt, n); err != nil {
			return nil, fmt.Errorf("slots' context: %w", err)
		}
		opt.NCtx = g.SeqCells() // what a slot that needs a context of its own gets
	}
	p := &pool{group: g, queueSize: queueSize, reuse: reuse, quit: make(chan struct{}), metrics: m, log: log}
	observing := make(chan struct{}, 1)
	cache := newPromptCache(reuse.CacheMiB, opt.NCtx*n)
	p.cache = cache
	for i := range n {
		sl := &slot{id: i, model: model, group: g, opt: opt, observing: observing, jobs: make(chan *job, 1), log: log, cache: cache, shift: shift}
		if _, err := sl.session(opt.Compression); err != nil {
			p.closeSessions()
			return nil, fmt.Errorf("slot %d: %w", i, err)
		}
		sl.nCtx = sl.sess.NCtx()
		p.slots = append(p.slots, sl)
	}
	p.free = slices.Clone(p.slots)
	for _, sl := range p.slots {
		p.wg.Add(1)
		go p.work(sl)
	}
	return p, nil
}

// submit gives j to a slot, or queues it, or says the queue is full
// (only with a bound: by default every request waits its turn, as in
// llama-server).
func (p *pool) submit(j *job) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.closed:
		return unavailable("the server is shutting down")
	case p.queueSize > 0 && len(p.waiting) >= p.queueSize:
		e := unavailable(fmt.Sprintf("the server is busy: all %d slots are working and %d requests are waiting (--queue %d); retry later", len(p.slots), len(p.waiting), p.queueSize))
		e.RetryAfter = p.retryAfter()
		return e
	}
	p.waiting = append(p.waiting, j)
	p.dispatch()
	return nil
}

// retryAfter is how many seconds a client turned away by a full queue
// should wait: about how long the queue takes to move by one round of
// the slots, from the mean time of recent requests (at least 1). Called
// with mu held.
func (p *pool) retryAfter() int {
	mean := p.meanJob
	if mean <= 0 {
		mean = time.Second
	}
	rounds := (len(p.waiting) + len(p.slots)) / len(p.slots)
	return max(1, int(math.Ceil((time.Duration(rounds) * mean).Seconds())))
}

// deferred is the number of requests waiting for a slot.
func (p *pool) deferred() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.waiting)
}

// dispatch hands waiting jobs, oldest first, to free slots. A job that
// names a busy slot waits for it without holding up the others. Called
// with mu held.
func (p *pool) dispatch() {
	kept := p.waiting[:0]
	for _, j := range p.waiting {
		sl := p.pick(j)
		if sl == nil {
			kept = append(kept, j)
			continue
		}
		p.free = slices.DeleteFunc(p.free, func(s *slot) bool { return s == sl })
		sl.busy.Store(true)
		p.busy.Add(1)
		sl.jobs <- j
	}
	clear(p.waiting[len(kept):])
	p.waiting = kept
}

// pick is the free slot for j, or nil, as llama-server picks: among the
// free slots (only the one j names, with id_slot), the one whose cache
// holds the longest prefix of the prompt, when that is more than
// --slot-prompt-similarity of it; else the one j names, or the least
// recently used. It marks j to go through the prompt cache first
// (slot.swapCached) when the slot would keep less than half of what it
// holds. Called with mu held.
func (p *pool) pick(j *job) *slot {
	if len(p.free) == 0 {
		return nil
	}
	var best *slot
	if j.req.Slot >= 0 {
		i := slices.IndexFunc(p.free, func(sl *slot) bool { return sl.id == j.req.Slot })
		if i < 0 {
			return nil
		}
		best = p.free[i]
	}
	if p.reuse.Similarity > 0 {
		var similar *slot
		simBest, shared := 0.0, 0
		for _, sl := range p.free {
			if (j.req.Slot >= 0 && sl.id != j.req.Slot) || len(sl.history) == 0 {
				continue
			}
			n := sharedPrefix(sl.history, j.tokens)
			if sim := float64(n) / float64(len(j.tokens)); sim > simBest && sim > p.reuse.Similarity {
				similar, simBest, shared = sl, sim, n
			}
		}
		if similar != nil {
			j.refresh = float64(shared)/float64(len(similar.history)) < saveBelowKeep
			return similar
		}
	}
	if best != nil {
		return best
	}
	j.refresh = true
	return p.free[0]
}

// sharedPrefix is the number of leading tokens a and b share.
func sharedPrefix(a, b []kvtrim.Token) int {
	n := 0
	for n < min(len(a), len(b)) && a[n] == b[n] {
		n++
	}
	return n
}

// work runs one slot's jobs until the pool closes.
func (p *pool) work(sl *slot) {
	defer p.wg.Done()
	for {
		select {
		case <-p.quit:
			return
		case j := <-sl.jobs:
			start := time.Now()
			var res *result
			var err error
			if j.action != nil {
				j.actionResult, err = j.action(sl)
			} else {
				sl.lastReq.Store(j.req)
				res, err = sl.serve(j)
			}
			if res != nil {
				p.metrics.record(res)
				sl.last.Store(&res.stats)
			}
			took := time.Since(start)
			p.mu.Lock()
			if j.action == nil {
				p.meanJob += (took - p.meanJob) / 8
			}
			sl.busy.Store(false)
			p.busy.Add(-1)
			p.free = append(p.free, sl) // the most recently used, last
			p.dispatch()
			p.mu.Unlock()
			j.finish(res, err)
		}
	}
}

// close stops the slots' goroutines (after their current jobs, which the
// caller cancels first if it cannot wait) and frees the sessions.
func (p *pool) close() {
	p.stop.Do(func() {
		p.mu.Lock()
		p.closed = true
		p.mu.Unlock()
		close(p.quit)
		p.wg.Wait()
		p.closeSessions()
	})
}

func (p *pool) closeSessions() {
	for _, sl := range p.slots {
		if sl.sess != nil {
			sl.sess.Close()
			sl.sess = nil
		}
	}
	if p.group != nil {
		p.group.Close()
	}
	if p.cache != nil {
		p.cache.clear()
	}
}

// session returns a session for compression c with an empty cache: the
// slot's own, reset, when it fits, else a new one in its place.
func (sl *slot) session(c kvtrim.Compression) (*kvtrim.Session, error) {
	if sl.sess != nil && sl.comp == c {
		if !sl.dirty {
			return sl.sess, nil
		}
		sl.sess.Reset()
		sl.dirty = false
		return sl.sess, nil
	}
	if sl.sess != nil {
		sl.sess.Close()
		sl.sess = nil
	}
	var s *kvtrim.Session
	err := kvtrim.ErrOwnContext
	if sl.group != nil {
		s, err = sl.group.NewSession(sl.id, c)
	}
	if errors.Is(err, kvtrim.ErrOwnContext) {
		// A single slot, or H2O, which observes every decoded token
		// through its context's eval callback: a context of its own.
		opt := sl.opt
		opt.Compression = c
		s, err = sl.model.NewSession(opt)
	}
	if err != nil {
		return nil, fmt.Errorf("make a session: %w", err)
	}
	sl.sess, sl.comp, sl.dirty = s, c, false
	return s, nil
}

// job is one request waiting for, or running on, a slot.
type job struct {
	ctx    context.Context
	req    *Request
	tokens []kvtrim.Token
	// refresh asks the slot to go through the prompt cache before the
	// prefill (pool.pick).
	refresh bool
	// events carries stream deltas (when req.Stream); done carries the
	// one final event, and never blocks, so that a slot is free to take
	// its next request however slowly its last client reads.
	events chan event
	done   chan event
	// action, when set, is run on the slot instead of a generation (slot
	// save, restore, erase), and its answer is actionResult.
	action       func(sl *slot) (any, error)
	actionResult any
}

// event is a piece of streamed text, or the end of the job.
type event struct {
	slot int
	// promptN and cacheN are the request's prompt tokens and how many of
	// them the slot's cache held (a stream's first event says them).
	promptN, cacheN int
	delta           string
	timings         *Timings // so far, when the request asks for them per token
	// progress, in an event of its own, is how far the prompt's decode is
	// (return_progress).
	progress *promptProgress
	tokens   []kvtrim.Token
	probs    []tokenProb // the tokens' probabilities, when the request asks
	res      *result
	err      error
}

func newJob(ctx context.Context, req *Request, tokens []kvtrim.Token) *job {
	return &job{ctx: ctx, req: req, tokens: tokens, events: make(chan event, 16), done: make(chan event, 1)}
}

// send passes a stream delta to the handler, or gives up when the client
// went away (the handler's writes time out when it stops reading).
func (j *job) send(ev event) error {
	select {
	case j.events <- ev:
		return nil
	case <-j.ctx.Done():
		return j.ctx.Err()
	}
}

// finish sends the final event.
func (j *job) finish(res *result, err error) {
	j.done <- event{res: res, err: err}
}

// checkCells reports cells a request left behind: a slot whose sequence
// holds positions past its session's, or a sequence of the group that no
// member owns but that holds cells. Call it when no request is running.
func (p *pool) checkCells() error {
	for _, sl := range p.slots {
		if sl.sess == nil {
			continue
		}
		first, last := sl.sess.CachedPositions()
		if want := sl.sess.Position() - 1; last != want || (want < 0 && first != -1) {
			return fmt.Errorf("slot %d: its cache holds positions [%d, %d], its session accounts for positions up to %d", sl.id, first, last, want)
		}
		if p.group != nil && sl.sess.Context() != p.group.Context() {
			if first, last := p.group.SeqPositions(sl.id); last != -1 {
				return fmt.Errorf("slot %d decodes in a context of its own, but its sequence of the shared one holds positions [%d, %d]", sl.id, first, last)
			}
		}
	}
	return nil
}

// decodeStats is the group's decode counts (zero for a single slot).
func (p *pool) decodeStats() kvtrim.GroupStats {
	if p.group == nil {
		return kvtrim.GroupStats{}
	}
	return p.group.Stats()
}
