package hooks

import (
	"fmt"
	"slices"
)

// CellMap records which cache cell holds which position of one sequence.
// llama.cpp keeps no public map of its own: kvtrim builds it from the cells
// llama.cpp reports writing (attn_inp_k_idxs) and updates it on every
// eviction and compaction.
type CellMap struct {
	cellOf map[int32]int32 // position -> cell
	posOf  map[int32]int32 // cell -> position
}

// NewCellMap returns an empty map.
func NewCellMap() *CellMap {
	return &CellMap{cellOf: map[int32]int32{}, posOf: map[int32]int32{}}
}

// Len is the number of positions held.
func (m *CellMap) Len() int { return len(m.cellOf) }

// Set records that position pos was written to cell. A cell reused for a
// new position forgets its old one.
func (m *CellMap) Set(pos, cell int32) {
	if old, ok := m.posOf[cell]; ok {
		delete(m.cellOf, old)
	}
	if old, ok := m.cellOf[pos]; ok {
		delete(m.posOf, old)
	}
	m.cellOf[pos] = cell
	m.posOf[cell] = pos
}

// Cell returns the cell of pos.
func (m *CellMap) Cell(pos int32) (int32, bool) {
	c, ok := m.cellOf[pos]
	return c, ok
}

// Positions returns the positions held, ascending.
func (m *CellMap) Positions() []int32 {
	out := make([]int32, 0, len(m.cellOf))
	for p := range m.cellOf {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// ByCell returns the positions held in cell order, as a saved sequence
// state lists them.
func (m *CellMap) ByCell() []int32 {
	cells := make([]int32, 0, len(m.posOf))
	for c := range m.posOf {
		cells = append(cells, c)
	}
	slices.Sort(cells)
	out := make([]int32, len(cells))
	for i, c := range cells {
		out[i] = m.posOf[c]
	}
	return out
}

// MaxCell is the highest cell in use, or -1.
func (m *CellMap) MaxCell() int32 {
	maxCell := int32(-1)
	for c := range m.posOf {
		maxCell = max(maxCell, c)
	}
	return maxCell
}

// Remove forgets the positions in [p0, p1).
func (m *CellMap) Remove(p0, p1 int32) {
	for p, c := range m.cellOf {
		if p >= p0 && p < p1 {
			delete(m.cellOf, p)
			delete(m.posOf, c)
		}
	}
}

// Compacted re-places the held positions in cells 0..n-1, keeping their
// cell order, which is what a state round trip does.
func (m *CellMap) Compacted() *CellMap { return Packed(m.ByCell()) }

// Packed is the map of positions held in cells 0..n-1 in the order given:
// a sequence state's positions (StatePositions) once loaded into an empty
// cache, or a compacted sequence.
func Packed(byCell []int32) *CellMap {
	out := NewCellMap()
	for i, p := range byCell {
		out.Set(p, int32(i))
	}
	return out
}

// Verify checks the map against the positions llama.cpp reports holding, in
// cell order (from a saved state), and its pos_min/pos_max.
func (m *CellMap) Verify(byCell []int32, posMin, posMax int32) error {
	mine := m.ByCell()
	if !slices.Equal(mine, byCell) {
		return fmt.Errorf("cell map out of step with llama.cpp: kvtrim has %d positions %s, llama.cpp %d %s",
			len(mine), summary(mine), len(byCell), summary(byCell))
	}
	if len(mine) == 0 {
		if posMin != -1 || posMax != -1 {
			return fmt.Errorf("cell map is empty but llama.cpp holds positions [%d, %d]", posMin, posMax)
		}
		return nil
	}
	pos := m.Positions()
	if pos[0] != posMin || pos[len(pos)-1] != posMax {
		return fmt.Errorf("cell map holds positions [%d, %d], llama.cpp [%d, %d]", pos[0], pos[len(pos)-1], posMin, posMax)
	}
	return nil
}

func summary(p []int32) string {
	if len(p) <= 8 {
		return fmt.Sprint(p)
	}
	return fmt.Sprintf("%v...%v", p[:4], p[len(p)-4:])
}
