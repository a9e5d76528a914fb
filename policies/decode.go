package policies

import (
	"slices"
)

// ObservesSteps is what a decode-time policy that scores by attention
// reads: every decoded token's attention row over the positions held,
// summed over layers and heads (and, at the start, the prompt's rows
// DecodePolicy.PromptRows says). The decoding context carries the eval
// callback, so such a policy needs a context of its own.
const ObservesSteps Observes = ObservesQueries + 1

// DecodeOptions are a decode-time policy's settings for one sequence, as
// kvtrim's Compression carries them; each policy reads the ones it needs.
type DecodeOptions struct {
	// Budget is the cells to keep: as the policy, the Budget (or Ratio of
	// the prompt) asked for; as the decode policy, the cells the prompt
	// policy kept. 0 before a prompt sets it.
	Budget int
	// Ratio is the share of the prompt asked for instead of a Budget
	// (only as the policy).
	Ratio float64
	// Heavy, Recent and Sinks are H2O's heavy hitters, the recent window
	// H2O and StreamingLLM keep, and StreamingLLM's attention sinks.
	Heavy, Recent, Sinks int
	// EvictEvery is how many positions leave at once (0: 1).
	EvictEvery int
	// AsPolicy says the policy runs from the prompt on (--policy), not
	// after a prompt-time policy (--decode-policy).
	AsPolicy bool
}

// Evictor is a decode-time policy's state for one sequence: it holds the
// positions the cache keeps and says which leave as tokens are decoded.
// Positions it returns are ascending.
type Evictor interface {
	// Start begins from the positions the cache holds, ascending, scored by
	// the attention the prompt's queries gave them (nil when nothing was
	// observed); it returns the positions to evict now.
	Start(positions []int, scores []float32) ([]int, error)
	// Room returns the positions to evict before coming more tokens are
	// decoded: a policy that shifts makes room first (one run, after which
	// the later positions move down over it); the others return nil.
	Room(coming int) []int
	// Step records the token decoded at pos, after every kept position:
	// row is its attention over Kept() and then itself (nil for a policy
	// that observes nothing). It returns the positions to evict.
	Step(pos int, row []float32) ([]int, error)
	// Kept is the positions held, ascending.
	Kept() []int
}

// DecodePolicy is a decode-time policy: one that keeps the cache bounded
// while tokens are decoded, as the policy (from the prompt on) or as the
// decode policy after a prompt-time one. Adding one is a file with its
// Evictor and an entry in decodePolicies.
type DecodePolicy struct {
	Name, Summary string
	// Observes is ObservesSteps or ObservesNothing.
	Observes Observes
	// PromptRows is, for a policy that observes steps and runs from the
	// prompt on, how many of the prompt's last query rows score its
	// positions at Start: 0 all of them (H2O's accumulated attention).
	PromptRows int
	// Shifts says the positions after an evicted run move down over it
	// (StreamingLLM's re-assignment), so that generation can run past the
	// context; the cache must be able to shift. Such a policy prefills a
	// prompt of any length, making Room before each chunk of at most
	// Chunk tokens.
	Shifts bool
	// RatioOrCounts says the policy, run from the prompt on, is sized by
	// a Ratio or by its own counts (Heavy and Recent), not both: a Ratio
	// given alone clears the counts and the counts given alone clear it.
	RatioOrCounts bool
	// Check validates the settings; o.Budget is 0 when a Ratio sizes it.
	Check func(o DecodeOptions) error
	// Fit fills the settings left unset for a budget of cells (kvtrim
	// eval's budgets).
	Fit func(o *DecodeOptions, budget int)
	// Cells is the most cells the policy holds while decoding (0 when a
	// Ratio sets it and the prompt is not known yet), and Chunk the most
	// prompt tokens a shifting policy decodes at once.
	Cells, Chunk func(o DecodeOptions) int
	// New makes the state for one sequence; o.Budget is set.
	New func(o DecodeOptions) (Evictor, error)
}

// decodePolicies are the decode-time policies, in the order --help lists
// them.
var decodePolicies = []DecodePolicy{streamingPolicy, h2oPolicy, tovaPolicy}

// LookupDecode returns the decode-time policy called name.
func LookupDecode(name string) (DecodePolicy, bool) {
	i := slices.IndexFunc(decodePolicies, func(p DecodePolicy) bool { return p.Name == name })
	if i < 0 {
		return DecodePolicy{}, false
	}
	return decodePolicies[i], true
}

// DecodeNames are the decode-time policies' names.
func DecodeNames() []string {
	names := make([]string, len(decodePolicies))
	for i, p := range decodePolicies {
		names[i] = p.Name
	}
	return names
}

// batched holds the positions an evictor drops until every of them are
// due, so that they leave the cache together (fewer seq_rm calls); they
// stay in the cache meanwhile, unscored. every <= 1 evicts at once.
func batched(e Evictor, every int) Evictor {
	if every <= 1 {
		return e
	}
	return &batchedEvictor{Evictor: e, every: every}
}

type batchedEvictor struct {
	Evictor
	every   int
	pending []int
}

func (b *batchedEvictor) Start(positions []int, scores []float32) ([]int, error) {
	b.pending = b.pending[:0]
	evicted, err := b.Evictor.Start(positions, scores)
	return b.hold(evicted), err
}

func (b *batchedEvictor) Step(pos int, row []float32) ([]int, error) {
	evicted, err := b.Evictor.Step(pos, row)
	return b.hold(evicted), err
}

// hold adds evicted to the pending positions and returns them all,
// ascending, once there are every of them.
func (b *batchedEvictor) hold(evicted []int) []int {
	b.pending = append(b.pending, evicted...)
	if len(b.pending) < b.every {
		return nil
	}
	out := slices.Clone(b.pending)
	slices.Sort(out)
	b.pending = b.pending[:0]
	return out
}
