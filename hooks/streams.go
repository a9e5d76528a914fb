package hooks

import (
	"github.com/kvtrim/kvtrim/bindings"
)

// Streams is the eval observer of a context that holds several sequences,
// a KV stream each (llama.cpp's non-unified cache, as kvtrim's groups make
// it), whose decodes carry several sequences' tokens at once. Each watched
// sequence has an Observer of its own: Streams passes it the cells its
// tokens were written to, read from the one key-writing node of layer 0
// every decode has (a cell index there is stream x cells + cell, and the
// stream is the sequence), and the K cache tensors. A decode that carries
// one sequence's tokens alone may make that sequence's observer the solo
// one (Solo), which then sees the query or softmax nodes it asks for:
// their rows are all that sequence's.
//
// With no sequence watched, every node is declined at once: the callback
// costs a call per node and splits nothing. Streams is not safe for
// concurrent use; its owner calls Watch, Unwatch and Solo between decodes.
type Streams struct {
	watched map[bindings.SeqID]*Observer
	solo    *Observer
	// cells is a stream's cells, from the K cache's shape.
	cells int64
}

// NewStreams makes an observer for a context of several streams.
func NewStreams() *Streams {
	return &Streams{watched: map[bindings.SeqID]*Observer{}}
}

// Watch passes sequence seq's written cells to o (Observer.Record) from
// the next decode on.
func (s *Streams) Watch(seq bindings.SeqID, o *Observer) { s.watched[seq] = o }

// Unwatch stops passing seq's cells.
func (s *Streams) Unwatch(seq bindings.SeqID) {
	if s.solo == s.watched[seq] {
		s.solo = nil
	}
	delete(s.watched, seq)
}

// Solo makes o, a watched sequence's observer, see the nodes it asks for
// in the following decodes, which must carry that sequence's tokens only;
// nil ends it.
func (s *Streams) Solo(o *Observer) { s.solo = o }

// Forget drops the cells sequence seq's observer was passed since it last
// took them: a decode failed and is tried again.
func (s *Streams) Forget(seq bindings.SeqID) {
	if o := s.watched[seq]; o != nil {
		o.TakeCells()
	}
}

// Ask implements bindings.EvalObserver.
func (s *Streams) Ask(t bindings.Tensor) bool {
	if len(s.watched) == 0 {
		return false
	}
	name := t.Name()
	if isKWrite(name) {
		k, il := kCacheOf(t)
		if il < 0 {
			return false
		}
		for _, o := range s.watched {
			o.setKCache(il, k)
		}
		if il == 0 {
			s.cells = k.Ne()[1]
		}
		return il == 0
	}
	return s.solo != nil && s.solo.Ask(t)
}

// Observe implements bindings.EvalObserver.
func (s *Streams) Observe(t bindings.Tensor) bool {
	if !isKWrite(t.Name()) {
		if s.solo != nil {
			return s.solo.Observe(t)
		}
		return true
	}
	cells, err := writtenCells(t)
	for _, c := range cells {
		if o := s.watched[bindings.SeqID(c/max(s.cells, 1))]; o != nil {
			o.written = append(o.written, c)
		}
	}
	if err != nil {
		for _, o := range s.watched {
			if o.err == nil {
				o.err = err
			}
		}
	}
	return true
}
