package server

import (
	"encoding/json"
	"math"
	"strconv"

	"github.com/kvtrim/kvtrim/bindings"
)

// resolveLogitBias turns a request's logit_bias into llama.cpp's biases,
// as llama-server reads it: an array of [token, bias] pairs or an object
// mapping tokens to biases, where a token is an id or a string (every
// token of it gets the bias) and a bias is a number or false (banned).
// With ignore_eos the end-of-generation tokens are banned too. Anything
// else is a 400, rather than llama-server's silent skip.
func (e *engine) resolveLogitBias(req *Request) error {
	vocab := e.model.Vocab()
	n := vocab.NTokens()
	var out []bindings.LogitBias
	add := func(key any, raw json.RawMessage, where string) error {
		var bias float32
		var num float64
		var b bool
		switch {
		case json.Unmarshal(raw, &num) == nil:
			bias = float32(num)
		case json.Unmarshal(raw, &b) == nil && !b:
			bias = float32(math.Inf(-1))
		default:
			return badRequest("logit_bias%s: give a number, or false to ban the token", where)
		}
		switch k := key.(type) {
		case int:
			if k < 0 || k >= n {
				return badRequest("logit_bias%s: token %d is outside the vocabulary (0 to %d)", where, k, n-1)
			}
			out = append(out, bindings.LogitBias{Token: bindings.Token(k), Bias: bias})
		case string:
			toks, err := vocab.Tokenize(k, false, false)
			if err != nil {
				return badRequest("logit_bias%s: %v", where, err)
			}
			for _, t := range toks {
				out = append(out, bindings.LogitBias{Token: t, Bias: bias})
			}
		}
		return nil
	}
	if raw := req.LogitBiasJSON; isSet(raw) {
		var pairs [][]json.RawMessage
		var object map[string]json.RawMessage
		switch {
		case json.Unmarshal(raw, &pairs) == nil:
			for i, p := range pairs {
				where := "[" + strconv.Itoa(i) + "]"
				if len(p) != 2 {
					return badRequest("logit_bias%s: give a [token, bias] pair", where)
				}
				var id int
				var s string
				var key any
				switch {
				case json.Unmarshal(p[0], &id) == nil:
					key = id
				case json.Unmarshal(p[0], &s) == nil:
					key = s
				default:
					return badRequest("logit_bias%s: the token is an id or a string", where)
				}
				if err := add(key, p[1], where); err != nil {
					return err
				}
			}
		case json.Unmarshal(raw, &object) == nil:
			for k, v := range object {
				var key any = k
				if id, err := strconv.Atoi(k); err == nil {
					key = id
				}
				if err := add(key, v, "["+strconv.Quote(k)+"]"); err != nil {
					return err
				}
			}
		default:
			return badRequest("logit_bias: give an array of [token, bias] pairs or an object mapping tokens to biases")
		}
	}
	if req.IgnoreEOS {
		for _, t := range e.eog {
			out = append(out, bindings.LogitBias{Token: t, Bias: float32(math.Inf(-1))})
		}
	}
	req.LogitBias = out
	return nil
}

// logitBiasJSON is one bias as llama-server echoes it: null for -Inf.
type logitBiasJSON struct {
	Bias  *float32       `json:"bias"`
	Token bindings.Token `json:"token"`
}

func logitBiasesJSON(in []bindings.LogitBias) []logitBiasJSON {
	out := make([]logitBiasJSON, len(in))
	for i, b := range in {
		out[i].Token = b.Token
		if !math.IsInf(float64(b.Bias), -1) {
			bias := b.Bias
			out[i].Bias = &bias
		}
	}
	return out
}
