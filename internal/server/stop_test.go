package server

import (
	"strings"
	"testing"
)

func TestStopMatcher(t *testing.T) {
	cases := []struct {
		stops  []string
		pieces []string
		want   string // all released text
		word   string
	}{
		{nil, []string{"a", "b", "c"}, "abc", ""},
		{[]string{"END"}, []string{"ab", "E", "N", "x"}, "abENx", ""},
		{[]string{"END"}, []string{"ab", "E", "N", "D", "zz"}, "ab", "END"},
		{[]string{"END", "b"}, []string{"aEN", "Db"}, "a", "END"},
		{[]string{"\n\n"}, []string{"line\n", "\nnext"}, "line", "\n\n"},
		{nil, []string{"caf\xc3", "\xa9!"}, "café!", ""},
	}
	for _, c := range cases {
		m := newStopMatcher(c.stops)
		var out strings.Builder
		for _, p := range c.pieces {
			d, stopped := m.add(p)
			if strings.Contains(d, "\xc3") && !strings.Contains(d, "\xc3\xa9") {
				t.Errorf("%q: released half a character %q", c.pieces, d)
			}
			out.WriteString(d)
			if stopped {
				break
			}
		}
		out.WriteString(m.flush())
		if out.String() != c.want || m.content() != c.want || m.word != c.word {
			t.Errorf("stops %q pieces %q: released %q content %q word %q, want %q %q", c.stops, c.pieces, out.String(), m.content(), m.word, c.want, c.word)
		}
	}
}
