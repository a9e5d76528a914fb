// Package progress shows how far a long run of steps (prompts of an
// evaluation, repetitions of a benchmark) has got: a bar redrawn in place
// with the time left on a terminal, or one log line per step where output
// is a file, a pipe or JSON logs.
package progress

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// Bar reports the progress of total steps. It is not safe for concurrent
// use.
type Bar struct {
	label        string
	total, done  int
	term         io.Writer // nil: log lines
	log          zerolog.Logger
	start, drawn time.Time
	width        int // of the last line drawn, to blank it
}

// New starts a bar of total steps. With term set (a terminal) the bar is
// redrawn there at most ten times a second; otherwise every step is one
// line of log.
func New(label string, total int, term io.Writer, log zerolog.Logger) *Bar {
	return &Bar{label: label, total: max(total, 1), term: term, log: log, start: time.Now()}
}

// Step records one finished step; detail says what it was.
func (b *Bar) Step(detail string) {
	b.done = min(b.done+1, b.total)
	elapsed := time.Since(b.start)
	left := time.Duration(float64(elapsed) / float64(b.done) * float64(b.total-b.done))
	if b.term == nil {
		b.log.Info().Int("done", b.done).Int("total", b.total).Dur("elapsed", elapsed).Dur("left", left).
			Msgf("%s %d/%d %s", b.label, b.done, b.total, detail)
		return
	}
	now := time.Now()
	if now.Sub(b.drawn) < 100*time.Millisecond && b.done < b.total {
		return
	}
	b.drawn = now
	const cells = 30
	fill := cells * b.done / b.total
	line := fmt.Sprintf("%s [%s%s] %d/%d %s elapsed, %s left  %s", b.label,
		strings.Repeat("#", fill), strings.Repeat(".", cells-fill), b.done, b.total,
		round(elapsed), round(left), detail)
	pad := max(0, b.width-len(line))
	b.width = len(line)
	fmt.Fprintf(b.term, "\r%s%s", line, strings.Repeat(" ", pad))
}

// Finish ends the bar's line on a terminal.
func (b *Bar) Finish() {
	if b.term != nil && b.width > 0 {
		fmt.Fprintln(b.term)
		b.width = 0
	}
}

// round shows a duration to the second (to the tenth under ten seconds).
func round(d time.Duration) time.Duration {
	if d < 10*time.Second {
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(time.Second)
}
