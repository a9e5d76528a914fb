package bindings

import (
	"fmt"
	"unsafe"
)

// Vocab is a model's tokenizer and its special tokens.
type Vocab struct {
	lib *Library
	ptr uintptr
}

// NTokens is the vocabulary size.
func (v *Vocab) NTokens() int { return int(v.lib.fn.llamaVocabNTokens(v.ptr)) }

// BOS is the beginning-of-sequence token.
func (v *Vocab) BOS() Token { return v.lib.fn.llamaVocabBOS(v.ptr) }

// EOS is the end-of-sequence token.
func (v *Vocab) EOS() Token { return v.lib.fn.llamaVocabEOS(v.ptr) }

// FIMPrefix, FIMSuffix and FIMMiddle are the fill-in-the-middle tokens,
// or -1 (LLAMA_TOKEN_NULL) for a vocabulary without them.
func (v *Vocab) FIMPrefix() Token { return v.lib.fn.llamaVocabFIMPre(v.ptr) }

// FIMSuffix: see FIMPrefix.
func (v *Vocab) FIMSuffix() Token { return v.lib.fn.llamaVocabFIMSuf(v.ptr) }

// FIMMiddle: see FIMPrefix.
func (v *Vocab) FIMMiddle() Token { return v.lib.fn.llamaVocabFIMMid(v.ptr) }

// IsEOG reports whether t ends generation (EOS, EOT and the like).
func (v *Vocab) IsEOG(t Token) bool { return v.lib.fn.llamaVocabIsEOG(v.ptr, t) }

// AddBOS reports whether the model wants BOS prepended to a prompt.
func (v *Vocab) AddBOS() bool { return v.lib.fn.llamaVocabGetAddBOS(v.ptr) }

// Tokenize turns text into tokens. addSpecial adds BOS/EOS as the model
// wants; parseSpecial lets special tokens be written in the text.
func (v *Vocab) Tokenize(text string, addSpecial, parseSpecial bool) ([]Token, error) {
	// A token is at least one byte, plus BOS/EOS.
	tokens := make([]Token, len(text)+2)
	var p *byte
	if len(text) > 0 {
		p = unsafe.StringData(text)
	}
	n := v.lib.fn.llamaTokenize(v.ptr, p, int32(len(text)), &tokens[0], int32(len(tokens)), addSpecial, parseSpecial)
	if n < 0 {
		if n == -2147483648 {
			return nil, fmt.Errorf("tokenize: text of %d bytes is too long", len(text))
		}
		tokens = make([]Token, -n)
		n = v.lib.fn.llamaTokenize(v.ptr, p, int32(len(text)), &tokens[0], int32(len(tokens)), addSpecial, parseSpecial)
		if n < 0 {
			return nil, fmt.Errorf("tokenize: llama.cpp failed (%d)", n)
		}
	}
	return tokens[:n], nil
}

// Piece returns the text of one token. special renders special tokens
// (like "</s>") instead of dropping them.
func (v *Vocab) Piece(t Token, special bool) string {
	var buf [64]byte
	n := v.lib.fn.llamaTokenToPiece(v.ptr, t, &buf[0], int32(len(buf)), 0, special)
	if n >= 0 {
		return string(buf[:n])
	}
	big := make([]byte, -n)
	n = v.lib.fn.llamaTokenToPiece(v.ptr, t, &big[0], int32(len(big)), 0, special)
	if n < 0 {
		return ""
	}
	return string(big[:n])
}

// Detokenize turns tokens back into text.
func (v *Vocab) Detokenize(tokens []Token, removeSpecial, unparseSpecial bool) string {
	if len(tokens) == 0 {
		return ""
	}
	buf := make([]byte, 8*len(tokens)+16)
	n := v.lib.fn.llamaDetokenize(v.ptr, &tokens[0], int32(len(tokens)), &buf[0], int32(len(buf)), removeSpecial, unparseSpecial)
	if n < 0 {
		buf = make([]byte, -n)
		n = v.lib.fn.llamaDetokenize(v.ptr, &tokens[0], int32(len(tokens)), &buf[0], int32(len(buf)), removeSpecial, unparseSpecial)
		if n < 0 {
			return ""
		}
	}
	return string(buf[:n])
}
