package server

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/rs/zerolog"

	"github.com/kvtrim/kvtrim"
)

// pool is the slots and the bounded queue in front of them. Each slot's
// goroutine takes jobs off the queue and runs them on its own session, a
// member of the pool's group: the group batches the slots' decodes into one
// llama_decode per step (continuous batching).
type pool struct {
	group   *kvtrim.Group
	queue   chan *job
	quit    chan struct{}
	wg      sync.WaitGroup
	slots   []*slot
	busy    atomic.Int64 // slots running a job
	metrics *metrics
	log     zerolog.Logger
	stop    sync.Once
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

	sess  *kvtrim.Session
	comp  kvtrim.Compression // the compression sess was made with
	dirty bool               // sess has served a request since it was made or reset
	// history is the tokens sess has decoded, in position order (prompts
	// and generated tokens), while dirty.
	history []kvtrim.Token
	// observing is the pool's token for a compressed prefill's
	// prompt-sized temporary context (Compression.PrefillsAside): one slot
	// at a time holds one.
	observing chan struct{}

	busy atomic.Bool
	last atomic.Pointer[kvtrim.Stats] // the last request's compression stats
}

// newPool makes a group of n sequences of opt.NCtx cells each, n slots
// with a session each, and starts their goroutines.
func newPool(model *kvtrim.Model, n, queueSize int, opt kvtrim.SessionOptions, m *metrics, log zerolog.Logger) (*pool, error) {
	gopt := opt
	gopt.NCtx = opt.NCtx * n
	g, err := model.NewGroup(gopt, n)
	if err != nil {
		return nil, fmt.Errorf("slots' context: %w", err)
	}
	opt.NCtx = g.SeqCells() // what a slot that needs a context of its own gets
	p := &pool{group: g, queue: make(chan *job, queueSize), quit: make(chan struct{}), metrics: m, log: log}
	observing := make(chan struct{}, 1)
	for i := range n {
		sl := &slot{id: i, model: model, group: g, opt: opt, observing: observing}
		if _, err := sl.session(opt.Compression); err != nil {
			p.closeSessions()
			return nil, fmt.Errorf("slot %d: %w", i, err)
		}
		sl.nCtx = sl.sess.NCtx()
		p.slots = append(p.slots, sl)
	}
	for _, sl := range p.slots {
		p.wg.Add(1)
		go p.work(sl)
	}
	return p, nil
}

// submit queues j, or says the queue is full.
func (p *pool) submit(j *job) error {
	select {
	case <-p.quit:
		return unavailable("the server is shutting down")
	default:
	}
	select {
	case p.queue <- j:
		return nil
	default:
		return unavailable(fmt.Sprintf("the server is busy: all %d slots are working and %d requests are waiting; retry later", len(p.slots), cap(p.queue)))
	}
}

// deferred is the number of requests waiting for a slot.
func (p *pool) deferred() int { return len(p.queue) }

// work runs one slot's jobs until the pool closes.
func (p *pool) work(sl *slot) {
	defer p.wg.Done()
	for {
		select {
		case <-p.quit:
			return
		case j := <-p.queue:
			p.busy.Add(1)
			sl.busy.Store(true)
			res, err := sl.serve(j)
			sl.busy.Store(false)
			p.busy.Add(-1)
			if res != nil {
				p.metrics.record(res)
				sl.last.Store(&res.stats)
			}
			j.finish(res, err)
		}
	}
}

// close stops the slots' goroutines (after their current jobs, which the
// caller cancels first if it cannot wait) and frees the sessions.
func (p *pool) close() {
	p.stop.Do(func() {
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
	p.group.Close()
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
	s, err := sl.group.NewSession(sl.id, c)
	if errors.Is(err, kvtrim.ErrOwnContext) {
		// H2O observes every decoded token through its context's eval
		// callback: it decodes in a context of its own, beside the group.
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
	// events carries stream deltas (when req.Stream) and then the one
	// final event.
	events chan event
}

// event is a piece of streamed text, or the end of the job.
type event struct {
	slot   int
	delta  string
	tokens []kvtrim.Token
	done   bool
	res    *result
	err    error
}

func newJob(ctx context.Context, req *Request, tokens []kvtrim.Token) *job {
	return &job{ctx: ctx, req: req, tokens: tokens, events: make(chan event, 16)}
}

// send passes ev to the handler, or gives up when the client went away.
func (j *job) send(ev event) error {
	select {
	case j.events <- ev:
		return nil
	case <-j.ctx.Done():
		return j.ctx.Err()
	}
}

// finish sends the final event (dropped when the client went away).
func (j *job) finish(res *result, err error) {
	j.send(event{done: true, res: res, err: err})
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
		if sl.sess.Context() != p.group.Context() {
			if first, last := p.group.SeqPositions(sl.id); last != -1 {
				return fmt.Errorf("slot %d decodes in a context of its own, but its sequence of the shared one holds positions [%d, %d]", sl.id, first, last)
			}
		}
	}
	return nil
}
