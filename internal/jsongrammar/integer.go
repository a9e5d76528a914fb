package jsongrammar

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// maxDigits is the most digits an integer's part has in llama.cpp's
// grammars (integral-part).
const maxDigits = 16

// integer is the rule for an integer schema, bounded by minimum, maximum,
// exclusiveMinimum and exclusiveMaximum when it has them.
func (c *converter) integer(o *object, name string) (string, error) {
	lo, hasLo, err := limit(o, "minimum", "exclusiveMinimum", math.Ceil, 1)
	if err != nil {
		return "", err
	}
	hi, hasHi, err := limit(o, "maximum", "exclusiveMaximum", math.Floor, -1)
	if err != nil {
		return "", err
	}
	if !hasLo && !hasHi {
		return c.builtin("integer"), nil
	}
	if hasLo && hasHi && hi < lo {
		return "", fmt.Errorf("json schema: no integer lies between %d and %d", lo, hi)
	}
	var alts []string
	// The negative ones, as "-" and their magnitudes.
	if !hasLo || lo < 0 {
		// -0 is JSON too, and llama.cpp allows it where 0 is in range.
		magLo, magHi := int64(0), int64(-1) // -1: unbounded
		if hasHi && hi < 0 {
			magLo = -hi
		}
		if hasLo {
			magHi = -lo
		}
		alts = append(alts, `"-" `+group(naturals(magLo, magHi)))
	}
	// And those from 0 up.
	if !hasHi || hi >= 0 {
		from, to := int64(0), int64(-1)
		if hasLo && lo > 0 {
			from = lo
		}
		if hasHi {
			to = hi
		}
		alts = append(alts, naturals(from, to))
	}
	return c.add(name, "("+strings.Join(alts, " | ")+")"), nil
}

// limit reads an inclusive bound (key) or an exclusive one (exclusive),
// rounded to an integer inward; step moves an exclusive bound inside.
func limit(o *object, key, exclusive string, round func(float64) float64, step int64) (int64, bool, error) {
	bound, found := int64(0), false
	for _, k := range []string{key, exclusive} {
		v, ok := o.get(k)
		if !ok {
			continue
		}
		n, isNum := v.(json.Number)
		f, err := n.Float64()
		if !isNum || err != nil || math.Abs(f) > 1e15 {
			return 0, false, fmt.Errorf("json schema: %s must be a number of at most 15 digits, not %s", k, encode(v))
		}
		b := int64(round(f))
		if k == exclusive && float64(b) == f {
			b += step
		}
		if !found || (step > 0 && b > bound) || (step < 0 && b < bound) {
			bound, found = b, true
		}
	}
	return bound, found, nil
}

// naturals is a GBNF expression for the decimal integers from lo to hi,
// without leading zeros (lo >= 0; hi < 0: no upper bound, up to
// maxDigits digits).
func naturals(lo, hi int64) string {
	var alts []string
	loDigits := len(strconv.FormatInt(lo, 10))
	last := maxDigits
	if hi >= 0 {
		last = len(strconv.FormatInt(hi, 10))
	}
	for n := loDigits; n <= last; n++ {
		// The numbers of n digits in range.
		first := strconv.FormatInt(lo, 10)
		if n > loDigits {
			first = "1" + strings.Repeat("0", n-1)
		}
		end := strings.Repeat("9", n)
		if hi >= 0 && n == last {
			end = strconv.FormatInt(hi, 10)
		}
		alts = append(alts, sameLength(first, end)...)
	}
	return strings.Join(alts, " | ")
}

// sameLength is GBNF alternatives for the digit strings from lo to hi,
// which have the same length, digit by digit.
func sameLength(lo, hi string) []string {
	if lo == "" {
		return []string{""}
	}
	if lo[0] == hi[0] {
		rest := sameLength(lo[1:], hi[1:])
		return []string{strings.TrimSpace(`"` + lo[:1] + `" ` + group(strings.Join(rest, " | ")))}
	}
	n := len(lo) - 1
	var alts []string
	from, to := lo[0], hi[0]
	if strings.Trim(lo[1:], "0") != "" {
		// lo's first digit, then the rest from lo's up to all nines.
		rest := sameLength(lo[1:], strings.Repeat("9", n))
		alts = append(alts, strings.TrimSpace(`"`+lo[:1]+`" `+group(strings.Join(rest, " | "))))
		from++
	}
	midTo := to
	if strings.Trim(hi[1:], "9") != "" {
		midTo--
	}
	if from <= midTo {
		alts = append(alts, strings.TrimSpace(digitRange(from, midTo)+" "+anyDigits(n)))
	}
	if midTo < to {
		rest := sameLength(strings.Repeat("0", n), hi[1:])
		alts = append(alts, strings.TrimSpace(`"`+hi[:1]+`" `+group(strings.Join(rest, " | "))))
	}
	return alts
}

// digitRange is a character class of the digits from a to b.
func digitRange(a, b byte) string {
	if a == b {
		return "[" + string(a) + "]"
	}
	return "[" + string(a) + "-" + string(b) + "]"
}

// anyDigits is n digits, any of them.
func anyDigits(n int) string {
	switch n {
	case 0:
		return ""
	case 1:
		return "[0-9]"
	}
	return fmt.Sprintf("[0-9]{%d}", n)
}

// group parenthesises an alternation so that it can be followed or
// preceded by more.
func group(s string) string {
	if s == "" || !strings.Contains(s, "|") {
		return s
	}
	return "(" + s + ")"
}
