package server

import (
	"encoding/binary"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kvtrim/kvtrim"
	"github.com/kvtrim/kvtrim/internal/testenv"
)

type slotAnswer struct {
	Content string
	Tokens  []int
	Timings struct {
		CacheN  int `json:"cache_n"`
		PromptN int `json:"prompt_n"`
	}
}

// TestSlotSaveRestore: as llama-server's test_slot_save: a slot saved,
// then given another prompt, restored into another slot, continues there
// from its cache (only the new tokens are decoded) and answers as the
// saved slot would; erase empties a slot.
func TestSlotSaveRestore(t *testing.T) {
	cfg := testConfig()
	cfg.Parallel, cfg.SlotSavePath = 2, t.TempDir()
	cfg.Sampling.Temp = 0
	ts := startServer(t, cfg)
	var first, other, restored, again slotAnswer
	ts.post("/completion", `{"prompt":"What is the capital of France?","id_slot":1,"n_predict":16}`, 200, &first)
	var saved map[string]any
	ts.post("/slots/1?action=save", `{"filename":"slot1.bin"}`, 200, &saved)
	if saved["n_saved"].(float64) < 20 || saved["id_slot"] != 1.0 {
		t.Fatalf("save: %v", saved)
	}
	next := `"prompt":"What is the capital of France?` + strings.ReplaceAll(first.Content, `"`, `\"`) + ` And then","n_predict":8`
	ts.post("/completion", `{"prompt":"Once upon a time","id_slot":1,"n_predict":4}`, 200, &other)
	var loaded map[string]any
	ts.post("/slots/0?action=restore", `{"filename":"slot1.bin"}`, 200, &loaded)
	if loaded["n_restored"] != saved["n_saved"] || loaded["id_slot"] != 0.0 {
		t.Fatalf("restore %v after save %v", loaded, saved)
	}
	ts.post("/completion", `{`+next+`,"id_slot":0}`, 200, &restored)
	if restored.Timings.CacheN < 20 {
		t.Errorf("the restored slot decoded its prompt again: %+v", restored.Timings)
	}
	ts.post("/completion", `{`+next+`,"id_slot":1}`, 200, &again) // slot 1 holds another prompt now
	if restored.Content != again.Content {
		t.Errorf("restored slot answered %q, a fresh one %q", restored.Content, again.Content)
	}
	var erased map[string]any
	ts.post("/slots/0?action=erase", ``, 200, &erased)
	if erased["n_erased"].(float64) < 20 {
		t.Errorf("erase: %v", erased)
	}
	ts.post("/completion", `{`+next+`,"id_slot":0}`, 200, &restored)
	if restored.Timings.CacheN != 0 {
		t.Errorf("an erased slot still held %d tokens", restored.Timings.CacheN)
	}
}

// TestSlotSaveCompressedAcrossRestart: a conversation on a SnapKV slot is
// saved, the server stops, a new one restores the slot, and the next turn
// answers token for token as it did without the restart, decoding only the
// turn's new tokens: the compressed cache is saved as it is.
func TestSlotSaveCompressedAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig()
	cfg.SlotSavePath, cfg.Compression = dir, kvtrim.Compression{Policy: "snapkv", Ratio: 0.25}
	cfg.Sampling.Temp = 0
	prompt := strings.Repeat("Tom had a red ball. He liked to play with it in the park. ", 8)
	var turn1, want slotAnswer
	var nextBody string
	t.Run("before", func(t *testing.T) {
		ts := startServer(t, cfg)
		ts.post("/completion", `{"prompt":"`+prompt+`","n_predict":12,"id_slot":0}`, 200, &turn1)
		ts.post("/slots/0?action=save", `{"filename":"conversation.bin"}`, 200, nil)
		nextBody = `{"prompt":"` + prompt + strings.ReplaceAll(turn1.Content, `"`, `\"`) + ` One day","n_predict":12,"id_slot":0,"return_tokens":true}`
		ts.post("/completion", nextBody, 200, &want)
	})
	t.Run("after", func(t *testing.T) {
		ts := startServer(t, cfg)
		ts.post("/slots/0?action=restore", `{"filename":"conversation.bin"}`, 200, nil)
		var got slotAnswer
		ts.post("/completion", nextBody, 200, &got)
		if got.Content != want.Content || len(got.Tokens) == 0 {
			t.Errorf("after the restart: %q, without it %q", got.Content, want.Content)
		}
		if got.Timings.CacheN == 0 || got.Timings.CacheN != want.Timings.CacheN {
			t.Errorf("cache_n %d after the restart, %d without it", got.Timings.CacheN, want.Timings.CacheN)
		}
	})
}

// TestSlotActionsRefuse: no client-chosen name leaves the save folder,
// actions need --slot-save-path, and bad ids, actions and files are 400s.
func TestSlotActionsRefuse(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig()
	cfg.SlotSavePath = filepath.Join(dir, "slots")
	ts := startServer(t, cfg)
	ts.post("/completion", `{"prompt":"Once upon a time","n_predict":4}`, 200, nil)
	for _, name := range []string{"../escape.bin", "a/b.bin", `a\b.bin`, "..", ".", "", " lead", "trail.", "x:y", strings.Repeat("a", 256), "nul\x00.bin"} {
		code, b := ts.do(t.Context(), http.MethodPost, "/slots/0?action=save", `{"filename":`+jsonString(name)+`}`)
		wantError(t, code, b, 400, typeInvalidRequest, "Invalid filename")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("files outside the save folder: %v", entries)
	}
	code, b := ts.do(t.Context(), http.MethodPost, "/slots/0?action=fly", `{"filename":"x.bin"}`)
	wantError(t, code, b, 400, typeInvalidRequest, "Invalid action")
	code, b = ts.do(t.Context(), http.MethodPost, "/slots/7?action=save", `{"filename":"x.bin"}`)
	wantError(t, code, b, 400, typeInvalidRequest, "slot")
	code, b = ts.do(t.Context(), http.MethodPost, "/slots/0?action=restore", `{"filename":"missing.bin"}`)
	wantError(t, code, b, 400, typeInvalidRequest, "no saved slot")
	os.WriteFile(filepath.Join(cfg.SlotSavePath, "junk.bin"), []byte("not a slot"), 0o644)
	code, b = ts.do(t.Context(), http.MethodPost, "/slots/0?action=restore", `{"filename":"junk.bin"}`)
	wantError(t, code, b, 400, typeInvalidRequest, "not a kvtrim snapshot")
	ts.post("/completion", `{"prompt":"Once upon a time","n_predict":4}`, 200, nil) // still serving

	off := startServer(t, testConfig())
	code, b = off.do(t.Context(), http.MethodPost, "/slots/0?action=save", `{"filename":"x.bin"}`)
	wantError(t, code, b, 501, typeNotSupported, "--slot-save-path")
}

// TestSlotFilesOfLlamaServer: a slot without compression is saved in
// llama.cpp's sequence file format with llama-server's packed token list,
// so llama-server restores it, and kvtrim restores llama-server's files:
// testdata/serve/llama-server-slot.bin, saved by llama-server 0.5.0 (slot
// 1 of -np 2 -c 512 on stories260K after {"prompt":"Once upon a
// time","n_predict":6,"temperature":0}, which answered ", there was a
// little g"), and the same file with the plain token list older servers
// wrote. Restored, the slot continues from those cells and answers as
// llama-server did.
func TestSlotFilesOfLlamaServer(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig()
	cfg.Parallel, cfg.CtxSize, cfg.SlotSavePath, cfg.Sampling.Temp = 2, 512, dir, 0
	ts := startServer(t, cfg)
	recorded, err := os.ReadFile(filepath.Join("..", "..", "testdata", "serve", "llama-server-slot.bin"))
	if err != nil {
		t.Fatal(err)
	}
	// The plain list: the packed header (null token, version, count) and
	// the media count dropped, the count in the file's header set.
	const header, packed = 12, 3
	n := int(recorded[header+8])
	legacy := append([]byte(nil), recorded[:header]...)
	legacy[8] = byte(n)
	legacy = append(legacy, recorded[header+4*packed:header+4*(packed+n)]...)
	legacy = append(legacy, recorded[header+4*(packed+n+1):]...)
	// The files are 0.5.0's; a release whose files have another version
	// must refuse them, saying so.
	sameFormat := testenv.Library(t).Release.SeqFileVersion == binary.LittleEndian.Uint32(recorded[4:])
	for name, b := range map[string][]byte{"llama.bin": recorded, "legacy.bin": legacy} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
		if !sameFormat {
			code, body := ts.do(t.Context(), http.MethodPost, "/slots/0?action=restore", `{"filename":"`+name+`"}`)
			wantError(t, code, body, 400, typeInvalidRequest, "sequence state file version 3")
			continue
		}
		var loaded map[string]any
		ts.post("/slots/0?action=restore", `{"filename":"`+name+`"}`, 200, &loaded)
		if loaded["n_restored"] != float64(n) {
			t.Fatalf("%s: restore %v, want %d tokens", name, loaded, n)
		}
		var a slotAnswer
		ts.post("/completion", `{"prompt":"Once upon a time","n_predict":6,"id_slot":0}`, 200, &a)
		if a.Content != ", there was a little g" || a.Timings.CacheN == 0 {
			t.Errorf("%s: after the restore %q, cache_n %d", name, a.Content, a.Timings.CacheN)
		}
	}
	if !sameFormat { // nothing was restored: fill the slot
		var a slotAnswer
		ts.post("/completion", `{"prompt":"Once upon a time","n_predict":6,"id_slot":0}`, 200, &a)
	}
	var saved map[string]any
	ts.post("/slots/0?action=save", `{"filename":"kvtrim.bin"}`, 200, &saved)
	b, err := os.ReadFile(filepath.Join(dir, "kvtrim.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if !kvtrim.IsLlamaSeqFile(b) || int(b[8]) != int(saved["n_saved"].(float64))+4 || b[12] != 0xff || b[16] != 1 {
		t.Errorf("a plain slot's file starts % x: want llama.cpp's header and llama-server's packed tokens", b[:20])
	}
	if !sameFormat {
		return
	}
	for _, bad := range []struct{ name, msg string }{{"truncated.bin", "sequence"}, {"media.bin", "mmproj"}} {
		mutated := append([]byte(nil), recorded...)
		if bad.name == "truncated.bin" {
			mutated = mutated[:len(mutated)/2]
		} else {
			mutated[header+4*(packed+n)] = 1 // one media chunk
		}
		os.WriteFile(filepath.Join(dir, bad.name), mutated, 0o644)
		code, body := ts.do(t.Context(), http.MethodPost, "/slots/0?action=restore", `{"filename":"`+bad.name+`"}`)
		wantError(t, code, body, 400, typeInvalidRequest, bad.msg)
	}
}
