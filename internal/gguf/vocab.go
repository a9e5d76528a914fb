package gguf

// Token types, numbered as llama.cpp's enum llama_token_type.
const (
	tokenNormal  int32 = 1
	tokenUnknown int32 = 2
	tokenControl int32 = 3
	tokenByte    int32 = 6
)

// The special tokens of the synthetic vocabulary, at llama's usual ids.
const (
	unkID = 0 // <unk>
	bosID = 1 // <s>
	eosID = 2 // </s>
)

// MinVocab is the smallest vocabulary WriteRandomLlama makes: the three
// special tokens and the 256 byte tokens, which SentencePiece's byte
// fallback needs to spell any text.
const MinVocab = 3 + 256

// spaceMark is how SentencePiece spells a space.
const spaceMark = "\u2581"

// vocab is a synthetic SentencePiece vocabulary of n ≥ MinVocab tokens:
// <unk>, <s>, </s>, the byte tokens <0x00>..<0xFF>, then normal pieces: the
// space mark, then lower-case letter strings (a, b, …, z, aa, ab, …) each
// bare and after a space mark. Normal pieces score lower the later they
// come, so the tokenizer prefers the short ones' merges; the rest score 0.
func vocab(n int) (tokens []string, scores []float32, types []int32) {
	tokens = make([]string, 0, n)
	scores = make([]float32, n)
	types = make([]int32, n)
	add := func(s string, typ int32) {
		types[len(tokens)] = typ
		tokens = append(tokens, s)
	}
	add("<unk>", tokenUnknown)
	add("<s>", tokenControl)
	add("</s>", tokenControl)
	const hex = "0123456789ABCDEF"
	for b := range 256 {
		add("<0x"+string([]byte{hex[b>>4], hex[b&15]})+">", tokenByte)
	}
	for i := 0; len(tokens) < n; i++ {
		scores[len(tokens)] = -float32(i)
		switch {
		case i == 0:
			add(spaceMark, tokenNormal)
		case i%2 == 1:
			add(letters((i-1)/2), tokenNormal)
		default:
			add(spaceMark+letters((i-1)/2), tokenNormal)
		}
	}
	return tokens, scores, types
}

// letters is the k-th string of lower-case letters in the order a … z,
// aa … az, ba … zz, aaa …: k written in bijective base 26.
func letters(k int) string {
	var b []byte
	for k++; k > 0; k = (k - 1) / 26 {
		b = append([]byte{byte('a' + (k-1)%26)}, b...)
	}
	return string(b)
}
