package kvtrim_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/kvtrim/kvtrim"
)

// groupCase is one member's prompt and compression.
type groupCase struct {
	prompt string
	comp   kvtrim.Compression
}

var groupCases = []groupCase{
	{"Once upon a time, there was a little girl named Lily.", kvtrim.Compression{}},
	{"Tom had a red ball. He liked to play with it in the park. One day the ball rolled away and Tom ran after it.",
		kvtrim.Compression{Policy: "snapkv", Budget: 16, Window: 4}},
	{"The cat sat on the mat and looked at the bird in the tree.",
		kvtrim.Compression{Policy: "streaming", Sinks: 4, Recent: 24, EvictEvery: 4}},
	{"Ben and Mia went to the beach. They built a big sand castle with a flag on top. Then the sea came in.",
		kvtrim.Compression{Policy: "snapkv", Budget: 20, Window: 4, DecodePolicy: "streaming", Sinks: 4, Recent: 20}},
}

// TestGroupMatchesSessions: four members of one group, each with its own
// compression, prefill and generate at the same time; each greedy
// continuation equals the same request in a session of its own, the
// decodes really were batched, and the members leave no cells behind. In a
// group that observes its context (made with a prompt compression), the
// compressed members prefill in their own streams, and still match.
func TestGroupMatchesSessions(t *testing.T) {
	for _, observe := range []bool{false, true} {
		t.Run(map[bool]string{false: "temporary contexts", true: "in stream"}[observe], func(t *testing.T) {
			testGroupMatchesSessions(t, observe)
		})
	}
}

func testGroupMatchesSessions(t *testing.T, observe bool) {
	m := loadModel(t, "stories260K.gguf")
	const n = 80
	opt := kvtrim.SessionOptions{NCtx: 256, NBatch: 256, Threads: 1}
	alone := make([]string, len(groupCases))
	for i, c := range groupCases {
		o := opt
		o.Compression = c.comp
		s, err := m.NewSession(o)
		if err != nil {
			t.Fatal(err)
		}
		alone[i], _ = promptAndGenerate(t, s, m, c.prompt, n)
		s.Close()
	}

	gopt := kvtrim.SessionOptions{NCtx: 256 * len(groupCases), NBatch: 256, Threads: 1}
	if observe {
		gopt.Compression = kvtrim.Compression{Policy: "snapkv", Ratio: 0.5}
	}
	g, err := m.NewGroup(gopt, len(groupCases))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if g.Observes() != observe {
		t.Fatalf("group made with %+v: observes %v", gopt.Compression, g.Observes())
	}
	if g.SeqCells() != 256 {
		t.Fatalf("each member has %d cells, want 256", g.SeqCells())
	}
	got := make([]string, len(groupCases))
	stats := make([]kvtrim.Stats, len(groupCases))
	var wg sync.WaitGroup
	for i, c := range groupCases {
		s, err := g.NewSession(i, c.comp)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], stats[i] = promptAndGenerate(t, s, m, c.prompt, n)
			s.Close()
		}()
	}
	wg.Wait()
	for i, c := range groupCases {
		if got[i] != alone[i] {
			t.Errorf("member %d (%s): grouped %q, alone %q", i, c.comp.Policy, got[i], alone[i])
		}
		if c.comp.Policy != "" && stats[i].EvictedCells == 0 {
			t.Errorf("member %d (%s): nothing evicted", i, c.comp.Policy)
		}
		// A compressed prompt built in the stream makes no other context.
		if c.comp.Policy == "snapkv" && observe && stats[i].NCtxPeak != g.SeqCells() {
			t.Errorf("member %d (%s): contexts of %d cells at once, its stream has %d", i, c.comp.Policy, stats[i].NCtxPeak, g.SeqCells())
		}
		if lo, hi := g.SeqPositions(i); lo != -1 || hi != -1 {
			t.Errorf("member %d closed but its sequence holds positions [%d, %d]", i, lo, hi)
		}
	}
	gs := g.Stats()
	t.Logf("%d rounds, %d requests, %d tokens", gs.Rounds, gs.Parts, gs.Tokens)
	// Four members alone would make one request per decode. How many
	// share one depends on the machine's load (a member that waits for a
	// CPU past the decoder's gather wait misses a round): 3.5-3.9 alone
	// on 2 cores, 1.8 once in CI with every package's tests at once. At
	// least 1.5 shows batching without timing the scheduler.
	if per := float64(gs.Parts) / float64(gs.Rounds); per < 1.5 {
		t.Errorf("%.2f members' requests per decode: the group did not batch (%+v)", per, gs)
	}
}

// TestGroupBadMembers: a sequence out of range, one taken twice, and H2O
// (which needs a context of its own) are refused; a freed sequence can be
// taken again.
func TestGroupBadMembers(t *testing.T) {
	m := loadModel(t, "stories260K.gguf")
	g, err := m.NewGroup(kvtrim.SessionOptions{NCtx: 512, Threads: 1}, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if _, err := g.NewSession(2, kvtrim.Compression{}); err == nil {
		t.Error("sequence 2 of a group of 2: no error")
	}
	for _, c := range []kvtrim.Compression{
		{Policy: "h2o", Heavy: 8, Recent: 8},
		{Policy: "snapkv", Budget: 16, Window: 4, DecodePolicy: "h2o", Heavy: 8, Recent: 8},
	} {
		if _, err := g.NewSession(0, c); !errors.Is(err, kvtrim.ErrOwnContext) {
			t.Errorf("%s/%s member: %v, want ErrOwnContext", c.Policy, c.DecodePolicy, err)
		}
	}
	s, err := g.NewSession(0, kvtrim.Compression{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.NewSession(0, kvtrim.Compression{}); err == nil {
		t.Error("sequence 0 taken twice: no error")
	}
	s.Close()
	if s, err = g.NewSession(0, kvtrim.Compression{Policy: "streaming", Sinks: 4, Recent: 1000}); err == nil {
		s.Close()
		t.Error("a streaming window larger than the member's cells: no error")
	} else if !errors.Is(err, kvtrim.ErrPromptTooLong) {
		t.Errorf("a streaming window larger than the member's cells: %v", err)
	}
	if s, err = g.NewSession(0, kvtrim.Compression{}); err != nil {
		t.Fatalf("sequence 0 after its member closed: %v", err)
	}
	s.Close()
}

// TestGroupPromptsInTurn: two members prefill prompts of several chunks
// at once; the one that began first has all its chunks decoded before the
// other's first (oldest prompt first, as llama-server fills its batch slot
// by slot), instead of the two taking turns and both finishing late; and
// each continues as the same request in a session of its own.
func TestGroupPromptsInTurn(t *testing.T) {
	m := loadModel(t, "stories260K.gguf")
	// Chunks of 511 tokens take long enough to decode that the decoder's
	// wait for the first member's next chunk (twice the last decode, at
	// least 10 ms) holds on a loaded machine.
	opt := kvtrim.SessionOptions{NCtx: 2048, NBatch: 512, Threads: 1}
	prompts := []string{
		strings.Repeat("Tom had a red ball. He liked to play with it in the park. ", 60),
		strings.Repeat("The cat sat on the mat and looked at the bird in the tree. ", 60),
	}
	want := make([]string, len(prompts))
	for i, p := range prompts {
		s, err := m.NewSession(opt)
		if err != nil {
			t.Fatal(err)
		}
		want[i], _ = promptAndGenerate(t, s, m, p, 12)
		s.Close()
	}

	gopt := opt
	gopt.NCtx = 2 * opt.NCtx
	g, err := m.NewGroup(gopt, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	var mu sync.Mutex
	var events []string // "member done/total", in the order the chunks were decoded
	second := make(chan struct{})
	var once sync.Once
	got := make([]string, len(prompts))
	var wg sync.WaitGroup
	for i, p := range prompts {
		s, err := g.NewSession(i, kvtrim.Compression{})
		if err != nil {
			t.Fatal(err)
		}
		s.SetProgress(func(done, total int) {
			mu.Lock()
			events = append(events, fmt.Sprintf("%d %d/%d", i, done, total))
			mu.Unlock()
			if i == 0 {
				once.Do(func() { close(second) }) // the second prompt begins after the first's first chunk
			}
		})
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer s.Close()
			if i == 1 {
				<-second
			}
			got[i], _ = promptAndGenerate(t, s, m, p, 12)
		}()
	}
	wg.Wait()
	t.Logf("chunks decoded: %v", events)
	if len(events) < 4 || !strings.HasPrefix(events[0], "0 ") {
		t.Fatalf("chunks decoded: %v; want several chunks of each prompt, the first member's first", events)
	}
	for _, e := range events {
		if strings.HasPrefix(e, "1 ") {
			t.Fatalf("member 1's chunk came before member 0's prompt was done: %v", events)
		}
		if done, total, _ := strings.Cut(e[2:], "/"); done == total {
			break
		}
	}
	for i := range prompts {
		if got[i] != want[i] {
			t.Errorf("member %d: grouped %q, alone %q", i, got[i], want[i])
		}
	}
}
