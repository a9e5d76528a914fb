package server

import (
	"bufio"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/kvtrim/kvtrim"
)

// Slot save, restore and erase (POST /slots/{id}?action=save|restore|erase,
// with --slot-save-path), as llama-server answers them. A slot's file is
// kvtrim's own format (kvtrim.WriteSnapshot): its tokens, its cells and
// its compression, so that a compressed slot is saved and restored as it
// is. Each action runs on the slot, between its requests.

// validSlotFilename reports whether name is a plain file name, as
// llama-server's fs_validate_filename checks one: valid UTF-8 of at most
// 255 bytes, no control characters, none of / \ : * ? " < > |, no
// leading or trailing space or trailing dot, and not . or .. (nothing a
// client sends can name a file outside the save folder).
func validSlotFilename(name string) bool {
	if name == "" || len(name) > 255 || !utf8.ValidString(name) || name == "." || name == ".." || strings.Contains(name, "..") {
		return false
	}
	for _, r := range name {
		switch {
		case r <= 0x1f, r == 0x7f, r >= 0x80 && r <= 0x9f, r == 0xff0e, r == 0x2215, r == 0x2216, r == 0xfffd, r == 0xfeff:
			return false
		case strings.ContainsRune(`/\:*?"<>|`, r):
			return false
		}
	}
	return name[0] != ' ' && name[len(name)-1] != ' ' && name[len(name)-1] != '.'
}

// handleSlotAction answers POST /slots/{id}?action=save|restore|erase.
func (s *Server) handleSlotAction(w http.ResponseWriter, r *http.Request, e *engine) {
	if s.cfg.SlotSavePath == "" {
		writeError(w, notSupported("This server does not support slots action. Start it with `--slot-save-path`"))
		return
	}
	id, err := strconv.Atoi(r.PathValue("id"))
	if err != nil || id < 0 || id >= len(e.pool.slots) {
		writeError(w, badRequest("slot %q: give a slot's id, 0 to %d", r.PathValue("id"), len(e.pool.slots)-1))
		return
	}
	body, err := readBody(r)
	if err != nil {
		writeError(w, err)
		return
	}
	var b struct {
		Filename string `json:"filename"`
	}
	action := r.URL.Query().Get("action")
	if action != "erase" {
		if err := decodeBody(body, &b); err != nil {
			writeError(w, err)
			return
		}
		if !validSlotFilename(b.Filename) {
			writeError(w, badRequest("Invalid filename"))
			return
		}
	}
	path := filepath.Join(s.cfg.SlotSavePath, b.Filename)
	var act func(sl *slot) (any, error)
	switch action {
	case "save":
		act = func(sl *slot) (any, error) { return sl.save(path, b.Filename) }
	case "restore":
		act = func(sl *slot) (any, error) { return sl.restore(path, b.Filename) }
	case "erase":
		act = func(sl *slot) (any, error) { return sl.erase() }
	default:
		writeError(w, badRequest("Invalid action"))
		return
	}
	req := &Request{Slot: id}
	j := newJob(r.Context(), req, nil)
	j.action = act
	if err := e.pool.submit(j); err != nil {
		writeError(w, err)
		return
	}
	select {
	case ev := <-j.done:
		if ev.err != nil {
			writeError(w, ev.err)
			return
		}
		writeJSON(w, http.StatusOK, j.actionResult)
	case <-r.Context().Done():
	}
}

// save writes what the slot holds to path.
func (sl *slot) save(path, name string) (any, error) {
	t0 := time.Now()
	if sl.sess == nil || !sl.dirty || len(sl.history) == 0 {
		return nil, badRequest("slot %d holds nothing to save", sl.id)
	}
	if !sl.comp.Appendable() {
		return nil, badRequest("slot %d: its kv policy %s evicts while decoding, so its cells alone cannot be continued; it cannot be saved", sl.id, sl.comp.PolicyName())
	}
	var n int64
	var err error
	if sl.sess.Plain() {
		// As llama-server writes it, so that either server restores it.
		n, err = sl.sess.SaveLlamaFile(path, packTokens(sl.history))
	} else {
		n, err = sl.saveSnapshot(path)
	}
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("save slot %d: %w", sl.id, err)
	}
	return map[string]any{
		"id_slot": sl.id, "filename": name, "n_saved": len(sl.history), "n_written": n,
		"timings": map[string]float64{"save_ms": msSince(t0)},
	}, nil
}

// saveSnapshot writes a compressed slot in kvtrim's own format, with its
// compression and positions.
func (sl *slot) saveSnapshot(path string) (int64, error) {
	snap, err := sl.sess.Snapshot()
	if err != nil {
		return 0, err
	}
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	n, err := kvtrim.WriteSnapshot(f, snap, sl.history)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return n, err
}

// restore loads a saved slot from path into this one, with the
// compression it was saved with.
func (sl *slot) restore(path, name string) (any, error) {
	t0 := time.Now()
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, badRequest("no saved slot %q", name)
	}
	if err != nil {
		return nil, fmt.Errorf("restore slot %d: %w", sl.id, err)
	}
	defer f.Close()
	st, _ := f.Stat()
	limit := max(sl.nCtx, 1) * (1 << 20)
	br := bufio.NewReader(f)
	var tokens []kvtrim.Token
	if head, _ := br.Peek(4); kvtrim.IsLlamaSeqFile(head) {
		tokens, err = sl.restoreLlamaFile(path, int64(limit))
	} else {
		var snap *kvtrim.Snapshot
		if snap, tokens, err = kvtrim.ReadSnapshot(br, limit); err != nil {
			return nil, badRequest("slot file %q: %v", name, err)
		}
		var sess *kvtrim.Session
		if sess, err = sl.session(snap.Compression()); err == nil {
			err = sess.Restore(snap)
		}
	}
	if err != nil {
		sl.history, sl.dirty = sl.history[:0], false
		return nil, badRequest("restore slot %d from %q: %v", sl.id, name, err)
	}
	sl.history, sl.dirty = tokens, true
	return map[string]any{
		"id_slot": sl.id, "filename": name, "n_restored": len(tokens), "n_read": st.Size(),
		"timings": map[string]float64{"restore_ms": msSince(t0)},
	}, nil
}

// restoreLlamaFile loads llama.cpp's sequence file, as llama-server
// writes it, into the slot: a plain sequence, continued with the slot's
// compression when that evicts nothing, else with none.
func (sl *slot) restoreLlamaFile(path string, limit int64) ([]kvtrim.Token, error) {
	c := sl.comp
	if c.Evicts() || !c.Appendable() {
		c = kvtrim.Compression{}
	}
	sess, err := sl.session(c)
	if err != nil {
		return nil, err
	}
	payload, _, err := sess.RestoreLlamaFile(path, 4*sl.nCtx+64, limit)
	if err != nil {
		return nil, err
	}
	tokens, err := unpackTokens(payload)
	if err == nil && len(tokens) != sess.Held() {
		err = fmt.Errorf("%d tokens for %d cells", len(tokens), sess.Held())
	}
	if err != nil {
		sess.Reset()
		return nil, err
	}
	return tokens, nil
}

// packTokens is llama-server's packed form of a slot's tokens in its slot
// files (server_tokens::serialize): LLAMA_TOKEN_NULL, the format version
// (1), the token count, the tokens, and the count of media chunks (none).
func packTokens(tokens []kvtrim.Token) []kvtrim.Token {
	out := make([]kvtrim.Token, 0, len(tokens)+4)
	out = append(out, -1, 1, kvtrim.Token(len(tokens)))
	out = append(out, tokens...)
	return append(out, 0)
}

// unpackTokens reads a slot file's tokens: the packed form (packTokens),
// or the plain list older llama-servers wrote.
func unpackTokens(payload []kvtrim.Token) ([]kvtrim.Token, error) {
	if len(payload) == 0 || payload[0] != -1 {
		return payload, nil
	}
	if len(payload) < 3 || payload[1] != 1 {
		return nil, errors.New("unsupported server tokens state version")
	}
	n := int(uint32(payload[2]))
	switch {
	case n > len(payload)-4:
		return nil, fmt.Errorf("server tokens state of %d tokens in %d", n, len(payload))
	case payload[3+n] != 0:
		return nil, errors.New("cannot restore media tokens without an mmproj")
	case len(payload) > 4+n:
		return nil, errors.New("trailing data in server tokens state")
	}
	return payload[3 : 3+n], nil
}

// erase empties the slot's cache.
func (sl *slot) erase() (any, error) {
	n := len(sl.history)
	if sl.sess != nil {
		sl.sess.Reset()
	}
	sl.history, sl.dirty = sl.history[:0], false
	return map[string]any{"id_slot": sl.id, "n_erased": n}, nil
}
