package kvtrim

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"

	"github.com/kvtrim/kvtrim/bindings"
	"github.com/kvtrim/kvtrim/hooks"
	"github.com/kvtrim/kvtrim/policies"
	"github.com/rs/zerolog"
)

// Hook is kvtrim's eval callback for a context another binding makes: the
// host puts Callback and UserData into its context parameters (cb_eval,
// cb_eval_user_data) before it creates the context, and passes the Hook
// to Attach. Until a session attached to that context observes a decode,
// the hook asks for no tensor, so decoding costs what it did without it.
// One hook serves one context.
type Hook struct {
	// Callback and UserData are what the context parameters take.
	Callback, UserData uintptr

	mu      sync.Mutex
	obs     bindings.EvalObserver
	release func()
}

// NewHook makes a hook for a context of lib's.
func NewHook(lib *bindings.Library) *Hook {
	h := &Hook{}
	h.Callback, h.UserData, h.release = lib.EvalCallback(h)
	return h
}

// Close unregisters the hook. A context still made with it decodes on,
// observed by nothing: kvtrim's callback asks for no tensor of an
// unregistered user data.
func (h *Hook) Close() { h.release() }

// Ask implements bindings.EvalObserver for the observer in use, if any.
func (h *Hook) Ask(t bindings.Tensor) bool {
	if o := h.current(); o != nil {
		return o.Ask(t)
	}
	return false
}

// Observe implements bindings.EvalObserver.
func (h *Hook) Observe(t bindings.Tensor) bool {
	if o := h.current(); o != nil {
		return o.Observe(t)
	}
	return true
}

func (h *Hook) current() bindings.EvalObserver {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.obs
}

// use makes o the hook's observer and returns what puts the previous one
// back.
func (h *Hook) use(o bindings.EvalObserver) (restore func()) {
	h.mu.Lock()
	prev := h.obs
	h.obs = o
	h.mu.Unlock()
	return func() {
		h.mu.Lock()
		h.obs = prev
		h.mu.Unlock()
	}
}

// AttachOptions say how to compress a context another binding made.
type AttachOptions struct {
	// Hook is the kvtrim hook the host put into the context's parameters
	// before making it (NewHook), or nil if it put none. Without it, H2O
	// (which reads every decode's attention) is refused, and SnapKV and
	// Expected Attention prefill in a temporary context of kvtrim's own,
	// as large as the prompt, and move the kept cells into the host's;
	// with it they work in the host's context, in place.
	Hook *Hook
	// FlashAttn is what the host asked of flash attention ("auto", "on"
	// or "off"; auto is on wherever llama.cpp supports it, as on every CPU
	// build): it decides which tensors the hook reads.
	FlashAttn string
	// Threads are the threads the host gave the context, and CacheType
	// its KV cache's element type ("f16", llama.cpp's default, or "f32"):
	// a temporary context of kvtrim's (see Hook) must match them.
	Threads   int
	CacheType string
	// Prompt, when the host has already decoded its prompt into sequence
	// 0 (at positions 0..len-1), is those tokens: CompressPrompt then
	// compresses them there. Without it the sequence must be empty, and
	// Prefill decodes and compresses the prompt.
	Prompt []Token
	// Compression is the policy, as for a session of kvtrim's own.
	Compression Compression
	// Log receives kvtrim's debug lines.
	Log zerolog.Logger
}

// Attach makes a session on sequence 0 of a context another binding (yzma,
// for one) made with lib, a llama_context * as a number. The session
// prefills, compresses and generates in that context, in place: kept cells
// are compacted there with a state round trip. The host keeps ownership:
// closing the session frees nothing of the host's, and the context is
// usable afterwards. A context is attached to one session at a time.
func Attach(lib *bindings.Library, hostCtx uintptr, opt AttachOptions) (*Session, error) {
	if hostCtx == 0 {
		return nil, errors.New("attach: the context handle is 0 (no context)")
	}
	fa, err := ParseFlashAttn(opt.FlashAttn)
	if err != nil {
		return nil, err
	}
	comp := opt.Compression
	if err := comp.Check(); err != nil {
		return nil, err
	}
	// Prompt policies that read attention can observe in a temporary
	// context of kvtrim's own; a decode-time one must see every step of
	// the host's.
	if p, _, ok := comp.decodeEntry(); ok && opt.Hook == nil && p.Observes == policies.ObservesSteps {
		return nil, fmt.Errorf("attach: %s reads the attention of every decode, which needs kvtrim's hook in the context's parameters: make the context with NewHook's Callback and UserData as cb_eval and cb_eval_user_data, and pass the hook in AttachOptions", p.Name)
	}
	c, err := lib.Borrow(hostCtx)
	if err != nil {
		return nil, fmt.Errorf("attach: %w", err)
	}
	model := &Model{Model: c.Model(), lib: lib, log: opt.Log}
	fail := func(err error) (*Session, error) {
		c.Close()
		return nil, fmt.Errorf("attach: %w", err)
	}
	if err := checkEvictable(model, comp); err != nil {
		return fail(err)
	}
	copt, err := contextOptions(SessionOptions{NCtx: c.NCtx(), NBatch: c.NBatch(), Threads: opt.Threads, FlashAttn: opt.FlashAttn, CacheType: opt.CacheType})
	if err != nil {
		return fail(err)
	}
	if err := checkShifting(model, comp, c.Memory(), c.NCtx(), "a context of %d cells"); err != nil {
		return fail(err)
	}
	mem := c.Memory()
	switch n := len(opt.Prompt); {
	case n == 0 && mem.SeqPosMax(0) >= 0:
		return fail(errors.New("sequence 0 of the context already holds tokens: attach before the prompt, or pass the tokens it holds as AttachOptions.Prompt"))
	case n > 0 && (mem.SeqPosMin(0) != 0 || int(mem.SeqPosMax(0)) != n-1):
		return fail(fmt.Errorf("AttachOptions.Prompt has %d tokens, but sequence 0 holds positions %d..%d: give the tokens the host decoded there, from position 0", n, mem.SeqPosMin(0), mem.SeqPosMax(0)))
	}
	var evict *evicting
	release := func() {}
	if p, _, ok := comp.decodeEntry(); ok {
		evict = &evicting{policy: p}
		if p.Observes == policies.ObservesSteps {
			evict.obs = newObserver(model, fa)
			release = opt.Hook.use(evict.obs)
		}
	}
	s := &Session{model: model, ctx: c, copt: copt, opt: SessionOptions{Compression: comp, NCtx: c.NCtx(), NBatch: c.NBatch(), Threads: int(copt.Threads)},
		evict: evict, release: release, hook: opt.Hook, attached: true}
	if len(opt.Prompt) > 0 {
		s.hostFilled, s.hostPrompt = true, opt.Prompt
		s.nextPos, s.used = int32(len(opt.Prompt)), len(opt.Prompt)
	}
	s.be = ownBackend{s} // closing it closes the borrowed context: frees nothing
	s.batch = lib.NewBatch(c.NBatch(), 1)
	s.stats = s.freshStats()
	return s, nil
}

// openAttachedObserving makes the host's own context the observing one:
// the prompt is decoded there, observed through the hook, and its kept
// cells compacted in place.
func (s *Session) openAttachedObserving(n int, queries bool) (*observing, error) {
	if n > s.ctx.NCtx() {
		return nil, fmt.Errorf("%w: %d prompt tokens (and lookahead) do not fit in the host's context of %d cells; compressing in place needs the whole prompt there first", ErrPromptTooLong, n, s.ctx.NCtx())
	}
	fa := s.copt.FlashAttn
	if queries {
		fa = bindings.FlashAttnEnabled
	}
	obs := newObserver(s.model, fa)
	restore := func() {}
	if s.hook != nil {
		restore = s.hook.use(obs)
	}
	s.stats.Attention = obs.Source().String()
	return &observing{ctx: s.ctx, obs: obs, release: restore, inPlace: true, blind: s.hook == nil}, nil
}

// CompressPrompt compresses the prompt the host decoded into the attached
// context itself (AttachOptions.Prompt) with the session's prompt policy:
// the host's cells are copied into a temporary context of kvtrim's own,
// whose observer sees the policy's last rows decoded again (the host's
// decodes were not observed), and the kept cells replace the host's
// sequence, packed. Positions stay the prompt's, so the host decodes on
// after them. A budget that covers the prompt leaves it whole.
func (s *Session) CompressPrompt(ctx context.Context) error {
	if !s.hostFilled {
		return errors.New("compress the host's prompt: this session was not attached to a prefilled sequence (AttachOptions.Prompt)")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	comp := s.opt.Compression.withDefaults()
	n := len(s.hostPrompt)
	if _, ok := comp.promptPolicy(); !ok {
		return fmt.Errorf("compress the host's prompt: %q is not a prompt policy (one of %v); a decode-time policy must see the prompt decoded: use Prefill", comp.Policy, policies.PromptNames())
	}
	s.stats.Budget = comp.BudgetFor(n)
	if !comp.PrefillsAside(n) {
		s.hostFilled = false
		s.stats.PromptTokens = n
		s.stats.Note = fmt.Sprintf("budget %d covers the prompt of %d tokens (or it is too short to compress): nothing evicted", s.stats.Budget, n)
		return nil
	}
	s.nextPos, s.used = 0, 0
	return s.prefillCompressed(ctx, s.hostPrompt, comp, s.stats.Budget)
}

// copyHostPrompt loads the host's prompt cells into the observing context,
// less the positions from on, which are decoded there again with the
// observer armed; the observer learns the loaded cells from the state
// (they sit in cells 0..k-1 in its order) and reads their keys from the
// cache as it reads any.
func (s *Session) copyHostPrompt(o *observing, n, from int) error {
	state, err := s.ctx.SeqState(s.seq, 0)
	if err != nil {
		return fmt.Errorf("copy the host's prompt: %w", err)
	}
	byCell, err := hooks.StatePositions(state, s.seq)
	if err != nil {
		return fmt.Errorf("copy the host's prompt: %w", err)
	}
	if len(byCell) != n {
		return fmt.Errorf("copy the host's prompt: the host's sequence holds %d cells for %d tokens", len(byCell), n)
	}
	if err := o.ctx.SetSeqState(0, state, 0); err != nil {
		return fmt.Errorf("copy the host's prompt: %w", err)
	}
	o.ctx.Memory().SeqRm(0, int32(from), -1)
	cells := hooks.Packed(byCell)
	cells.Remove(int32(from), int32(n))
	o.obs.SetCells(cells)
	s.nextPos, s.used = int32(from), from
	s.stats.PromptTokens += from
	return nil
}
