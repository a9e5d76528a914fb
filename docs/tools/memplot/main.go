// Command memplot draws docs/CHUNKED.md's chart of peak memory against
// prompt length from the table docs/chunked-memory.sh writes: one line per
// configuration, peak RSS in MiB against prompt tokens.
//
//	go run ./docs/tools/memplot -in docs/results/chunked-memory.tsv -o docs/results/chunked-memory.png
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/kvtrim/kvtrim/internal/plot"
)

func main() {
	in := flag.String("in", "docs/results/chunked-memory.tsv", "table: len, config, prompt_tokens, maxrss_kb, ... (tab-separated, with a header)")
	out := flag.String("o", "docs/results/chunked-memory.png", "PNG to write")
	flag.Parse()
	if err := run(*in, *out); err != nil {
		fmt.Fprintln(os.Stderr, "memplot:", err)
		os.Exit(1)
	}
}

func run(in, out string) error {
	f, err := os.Open(in)
	if err != nil {
		return err
	}
	defer f.Close()
	series := map[string]*plot.Series{}
	var order []string
	sc := bufio.NewScanner(f)
	for line := 0; sc.Scan(); line++ {
		cols := strings.Split(sc.Text(), "\t")
		if line == 0 || len(cols) < 4 {
			continue // the header, or the end mark
		}
		tokens, err1 := strconv.ParseFloat(cols[2], 64)
		rss, err2 := strconv.ParseFloat(cols[3], 64)
		if err1 != nil || err2 != nil {
			return fmt.Errorf("%s line %d: %q is not a row of numbers", in, line+1, sc.Text())
		}
		s := series[cols[1]]
		if s == nil {
			s = &plot.Series{Name: cols[1]}
			series[cols[1]] = s
			order = append(order, cols[1])
		}
		s.X = append(s.X, tokens)
		s.Y = append(s.Y, rss/1024)
	}
	if err := sc.Err(); err != nil {
		return err
	}
	slices.Sort(order)
	chart := plot.Chart{Title: "Peak RSS against prompt length (random 125m shape, q8_0)", XLabel: "prompt tokens", YLabel: "peak RSS, MiB", LogX: true}
	for _, name := range order {
		chart.Series = append(chart.Series, *series[name])
	}
	return plot.Lines(out, chart)
}
