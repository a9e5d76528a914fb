package jsongrammar

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// unsupportedError is a pattern the converter does not translate, though
// it may be a valid regular expression: a schema with one accepts any
// string, as llama.cpp's does.
type unsupportedError string

func (e unsupportedError) Error() string { return string(e) }

// patternRule converts a string schema's pattern, an anchored regular
// expression (^...$), to a GBNF expression for the string's characters.
// It knows literals, ".", classes ([a-z], [^"], \d \w \s and their
// negations), groups ((...), (?:...)), alternation and the quantifiers
// * + ? {m} {m,} {m,n}; a lazy quantifier's "?" is ignored.
func patternRule(pattern string) (string, error) {
	if !strings.HasPrefix(pattern, "^") || !strings.HasSuffix(pattern, "$") || len(pattern) < 2 {
		return "", unsupportedError("a pattern must start with ^ and end with $")
	}
	p := &patternParser{src: []rune(pattern[1 : len(pattern)-1])}
	out, err := p.alternation(0)
	if err != nil {
		return "", err
	}
	if p.pos < len(p.src) {
		return "", fmt.Errorf("unexpected %q at %d", p.src[p.pos], p.pos+1)
	}
	if out == "" {
		return `""`, nil
	}
	return out, nil
}

// maxPatternDepth bounds the nesting of a pattern's groups.
const maxPatternDepth = 100

type patternParser struct {
	src []rune
	pos int
}

func (p *patternParser) peek() (rune, bool) {
	if p.pos >= len(p.src) {
		return 0, false
	}
	return p.src[p.pos], true
}

// alternation parses seq ('|' seq)*.
func (p *patternParser) alternation(depth int) (string, error) {
	if depth > maxPatternDepth {
		return "", errors.New("groups nested too deep")
	}
	var alts []string
	for {
		seq, err := p.sequence(depth)
		if err != nil {
			return "", err
		}
		if seq == "" {
			seq = `""`
		}
		alts = append(alts, seq)
		if r, ok := p.peek(); !ok || r != '|' {
			break
		}
		p.pos++
	}
	if len(alts) == 1 {
		return alts[0], nil
	}
	return "(" + strings.Join(alts, " | ") + ")", nil
}

// sequence parses quantified atoms up to '|', ')' or the end.
func (p *patternParser) sequence(depth int) (string, error) {
	var parts []string
	for {
		r, ok := p.peek()
		if !ok || r == '|' || r == ')' {
			return strings.Join(parts, " "), nil
		}
		atom, err := p.atom(depth)
		if err != nil {
			return "", err
		}
		q, err := p.quantifier()
		if err != nil {
			return "", err
		}
		if q != "" {
			if !strings.HasPrefix(atom, "(") && !strings.HasPrefix(atom, "[") && !isOneLiteral(atom) {
				atom = "(" + atom + ")"
			}
			atom += q
		}
		parts = append(parts, atom)
	}
}

// isOneLiteral says whether a GBNF expression is one quoted literal.
func isOneLiteral(s string) bool {
	if len(s) < 2 || s[0] != '"' || s[len(s)-1] != '"' {
		return false
	}
	for i := 1; i < len(s)-1; i++ {
		if s[i] == '\\' {
			i++
		} else if s[i] == '"' {
			return false
		}
	}
	return true
}

// atom parses a group, a class, '.', an escape or a literal character.
func (p *patternParser) atom(depth int) (string, error) {
	r := p.src[p.pos]
	p.pos++
	switch r {
	case '(':
		if strings.HasPrefix(string(p.src[p.pos:]), "?:") {
			p.pos += 2
		} else if r, ok := p.peek(); ok && r == '?' {
			return "", unsupportedError("lookarounds and named groups are not supported")
		}
		inner, err := p.alternation(depth + 1)
		if err != nil {
			return "", err
		}
		if r, ok := p.peek(); !ok || r != ')' {
			return "", errors.New("unbalanced parentheses")
		}
		p.pos++
		return "(" + inner + ")", nil
	case '[':
		return p.class()
	case '.':
		return `[^\n\r]`, nil
	case '\\':
		e, ok := p.peek()
		if !ok {
			return "", errors.New("a trailing backslash")
		}
		p.pos++
		if cls, ok := escapeClasses[e]; ok {
			return cls, nil
		}
		return literal(string(unescape(e))), nil
	case ')':
		return "", errors.New("unbalanced parentheses")
	case '^', '$':
		return "", unsupportedError("an anchor inside the pattern")
	case '*', '+', '?', '{':
		return "", fmt.Errorf("a quantifier %q with nothing to repeat", r)
	}
	return literal(string(r)), nil
}

// escapeClasses are the class escapes, as GBNF classes.
var escapeClasses = map[rune]string{
	'd': `[0-9]`, 'D': `[^0-9]`,
	'w': `[a-zA-Z0-9_]`, 'W': `[^a-zA-Z0-9_]`,
	's': `[ \t\n\r\f\v]`, 'S': `[^ \t\n\r\f\v]`,
}

// classRanges are the class escapes' members, for use inside a class.
var classRanges = map[rune]string{'d': `0-9`, 'w': `a-zA-Z0-9_`, 's': ` \t\n\r\f\v`}

// unescape is the character an escape other than a class stands for.
func unescape(e rune) rune {
	switch e {
	case 'n':
		return '\n'
	case 'r':
		return '\r'
	case 't':
		return '\t'
	case 'f':
		return '\f'
	case 'v':
		return '\v'
	}
	return e
}

// class parses a character class after its '['.
func (p *patternParser) class() (string, error) {
	var b strings.Builder
	b.WriteByte('[')
	if r, ok := p.peek(); ok && r == '^' {
		b.WriteByte('^')
		p.pos++
	}
	first := true
	for {
		r, ok := p.peek()
		if !ok {
			return "", errors.New("an unclosed character class")
		}
		p.pos++
		if r == ']' && !first {
			break
		}
		first = false
		if r == '\\' {
			e, ok := p.peek()
			if !ok {
				return "", errors.New("an unclosed character class")
			}
			p.pos++
			if cls, ok := classRanges[e]; ok {
				b.WriteString(cls)
				continue
			}
			r = unescape(e)
		}
		if r == '-' {
			if n, ok := p.peek(); ok && n != ']' && b.Len() > 1 {
				b.WriteByte('-')
				continue
			}
		}
		b.WriteString(classChar(r))
	}
	b.WriteByte(']')
	return b.String(), nil
}

// classChar writes r as it must stand inside a GBNF class.
func classChar(r rune) string {
	switch r {
	case '\\', ']', '[', '-', '^':
		return `\` + string(r)
	case '\n':
		return `\n`
	case '\r':
		return `\r`
	case '\t':
		return `\t`
	}
	if r < 0x20 || r == 0x7f {
		return fmt.Sprintf(`\x%02X`, r)
	}
	return string(r)
}

// quantifier parses an optional quantifier into GBNF's.
func (p *patternParser) quantifier() (string, error) {
	r, ok := p.peek()
	if !ok {
		return "", nil
	}
	q := ""
	switch r {
	case '*', '+', '?':
		p.pos++
		q = string(r)
	case '{':
		end := p.pos
		for end < len(p.src) && p.src[end] != '}' {
			end++
		}
		if end == len(p.src) {
			return "", unsupportedError("an unclosed {")
		}
		body := string(p.src[p.pos+1 : end])
		p.pos = end + 1
		lo, hi, found := strings.Cut(body, ",")
		min, err := strconv.Atoi(lo)
		if err != nil || min < 0 {
			return "", unsupportedError("a bad repetition {" + body + "}")
		}
		max := min
		if found {
			max = -1
			if hi != "" {
				if max, err = strconv.Atoi(hi); err != nil || max < min {
					return "", unsupportedError("a bad repetition {" + body + "}")
				}
			}
		}
		q = repeat(min, max)
	default:
		return "", nil
	}
	if r, ok := p.peek(); ok && r == '?' { // lazy: the same strings
		p.pos++
	}
	return q, nil
}
