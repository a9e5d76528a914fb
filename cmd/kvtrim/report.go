package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/spf13/pflag"

	"github.com/kvtrim/kvtrim/bindings"
	"github.com/kvtrim/kvtrim/internal/plot"
)

// machine describes where a report's numbers were measured.
type machine struct {
	CPU       string   `json:"cpu"`
	CPUs      int      `json:"cpus"`
	OS        string   `json:"os"`
	GoVersion string   `json:"go"`
	Llama     string   `json:"llama_cpp"`
	LibDir    string   `json:"lib_dir"`
	Backends  []string `json:"backends"`
}

// describeMachine reads the CPU's model name (Linux) and the library's
// version and backends.
func describeMachine(lib *bindings.Library) machine {
	m := machine{CPU: "unknown", CPUs: runtime.NumCPU(), OS: runtime.GOOS + "/" + runtime.GOARCH, GoVersion: runtime.Version(),
		Llama: lib.Version, LibDir: lib.Dir, Backends: lib.Backends()}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

// String is the machine in one line, for markdown reports.
func (m machine) String() string {
	return fmt.Sprintf("%s, %d CPUs, %s, llama.cpp %s (%s), %s", m.CPU, m.CPUs, m.OS, m.Llama, strings.Join(m.Backends, ", "), m.GoVersion)
}

// outputFlags are the report files of eval and bench.
type outputFlags struct {
	json, md, png string
}

func addOutputFlags(fs *pflag.FlagSet) *outputFlags {
	o := &outputFlags{}
	fs.StringVar(&o.json, "json", "", "write the results as JSON to this file")
	fs.StringVar(&o.md, "md", "", "write the tables as markdown to this file")
	fs.StringVar(&o.png, "png", "", "draw the results as PNG pictures into this folder")
	return o
}

// check makes sure every output can be written before any long work: the
// files' folders exist and take a file, the picture folder can be made.
func (o *outputFlags) check() error {
	for _, f := range []struct{ flag, path string }{{"--json", o.json}, {"--md", o.md}} {
		if f.path == "" {
			continue
		}
		if err := probeDir(filepath.Dir(f.path)); err != nil {
			return usageErrorf("%s %s: %v", f.flag, f.path, err)
		}
	}
	if o.png != "" {
		if err := os.MkdirAll(o.png, 0o755); err != nil {
			return usageErrorf("--png %s: %v", o.png, err)
		}
		if err := probeDir(o.png); err != nil {
			return usageErrorf("--png %s: %v", o.png, err)
		}
	}
	return nil
}

// probeDir reports whether a file can be created in dir.
func probeDir(dir string) error {
	f, err := os.CreateTemp(dir, ".kvtrim-probe-*")
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return fmt.Errorf("cannot write in %s: %w", dir, err)
	}
	f.Close()
	return os.Remove(f.Name())
}

// write writes the report as JSON, its markdown, and its pictures.
func (o *outputFlags) write(report any, md string, pictures func(dir string) error) error {
	var errs []error
	if o.json != "" {
		errs = append(errs, writeJSON(o.json, report))
	}
	if o.md != "" {
		if err := os.WriteFile(o.md, []byte(md), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("write --md: %w", err))
		}
	}
	if o.png != "" && pictures != nil {
		errs = append(errs, pictures(o.png))
	}
	return errors.Join(errs...)
}

// fileName turns a label such as "snapkv:max" into a safe file name part.
func fileName(parts ...string) string {
	s := strings.Join(parts, "-")
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '.':
			return r
		}
		return '_'
	}, s) + ".png"
}

// markdown is the report's tables: per budget, each policy's hits per grid
// cell and how often it answered as the full cache did; then a summary.
func (r *evalReport) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s on %s; %s\n", r.Task, r.Model, r.Machine)
	if !r.Complete {
		fmt.Fprintf(&b, "\n**Interrupted**: the counts are of the prompts finished.\n")
	}
	for _, bud := range r.budgets {
		for _, what := range []string{"accuracy", "same answer as none"} {
			per := fmt.Sprintf("of %d per cell", r.Trials)
			if r.Task == "recall" {
				per = fmt.Sprintf("prompts right of the set's %d", r.Trials)
			}
			fmt.Fprintf(&b, "\n%s, %s, budget %s (%s)\n\n| policy |", r.Task, what, bud, per)
			for li, l := range r.Lengths {
				for _, d := range r.Depths {
					fmt.Fprintf(&b, " %s |", r.columnLabel(li, l, d))
				}
			}
			b.WriteString(" all |\n|---|")
			for range len(r.Lengths) * len(r.Depths) {
				b.WriteString("---|")
			}
			b.WriteString("---|\n")
			for _, cfg := range r.configs {
				budget := bud.value()
				if cfg.name == "none" {
					budget = 0
				}
				fmt.Fprintf(&b, "| %s |", cfg.name)
				n, sum := 0, 0
				for _, l := range r.Lengths {
					for _, d := range r.Depths {
						rec := r.cells[cellKey(cfg.name, budget, l, d)]
						if rec == nil {
							b.WriteString(" - |")
							continue
						}
						v := rec.Correct
						if what != "accuracy" {
							v = rec.SameAsFull
						}
						fmt.Fprintf(&b, " %d |", v)
						n, sum = n+rec.Trials, sum+v
					}
				}
				fmt.Fprintf(&b, " %s |\n", percent(sum, n))
			}
		}
	}
	fmt.Fprintf(&b, "\n%s, summary\n\n| policy | budget | trials | accuracy | same answer as none |\n|---|---|---|---|---|\n", r.Task)
	for _, s := range r.Summary {
		budget := "full"
		if s.Policy != "none" {
			budget = budgetLabel(s.Budget, r.BudgetUnit)
		}
		fmt.Fprintf(&b, "| %s | %s | %d | %s | %s |\n", s.Policy, budget, s.Trials, percent(s.Correct, s.Trials), percent(s.SameAsFull, s.Trials))
	}
	return b.String()
}

// lengthLabel names grid column li: its length, and for the lines task
// its number of keyed lines.
func (r *evalReport) lengthLabel(li, length int) string {
	if li < len(r.Lines) {
		return fmt.Sprintf("%d/%d lines", length, r.Lines[li])
	}
	return fmt.Sprint(length)
}

// columnLabel names the grid column of length li at depth d: recall's
// prompts are counted by length alone.
func (r *evalReport) columnLabel(li, length int, d float64) string {
	if r.Task == "recall" {
		return fmt.Sprintf("%d tokens", length)
	}
	return fmt.Sprintf("%s @%.0f%%", r.lengthLabel(li, length), d*100)
}

func percent(n, of int) string {
	if of == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", 100*float64(n)/float64(of))
}

// budgetLabel is a budget as a column heading: a percentage or cells.
func budgetLabel(v float64, unit string) string {
	if unit == "cells" {
		return fmt.Sprintf("%g cells", v)
	}
	return fmt.Sprintf("%g%%", 100*v)
}

// pictures draws a heatmap of accuracy over length x depth per policy and
// budget, and, with several budgets, accuracy against budget per policy.
func (r *evalReport) pictures(dir string) error {
	xs := make([]string, len(r.Lengths))
	for i, l := range r.Lengths {
		xs[i] = r.lengthLabel(i, l)
	}
	ys := make([]string, len(r.Depths))
	for i, d := range r.Depths {
		ys[i] = fmt.Sprintf("%.0f%%", 100*d)
	}
	heat := func(policy string, budget float64) error {
		values := make([][]float64, len(r.Depths))
		for di, d := range r.Depths {
			values[di] = make([]float64, len(r.Lengths))
			for li, l := range r.Lengths {
				rec := r.cells[cellKey(policy, budget, l, d)]
				if rec == nil {
					return nil // interrupted before this cell: no picture
				}
				values[di][li] = float64(rec.Correct) / float64(rec.Trials)
			}
		}
		label, name := "full cache", fileName(r.Task, policy)
		if policy != "none" {
			label = "budget " + budgetLabel(budget, r.BudgetUnit)
			name = fileName(r.Task, policy, strings.ReplaceAll(budgetLabel(budget, r.BudgetUnit), "%", "pct"))
		}
		title := fmt.Sprintf("%s: %s, %s", r.Task, policy, label)
		return plot.Heatmap(filepath.Join(dir, name), title, "prompt length (tokens)", "depth", xs, ys, values)
	}
	var errs []error
	var series []plot.Series
	var budgetX []float64 // the budgets on the x axis: % of the prompt, or cells
	for _, b := range r.budgets {
		if r.BudgetUnit == "cells" {
			budgetX = append(budgetX, b.value())
		} else {
			budgetX = append(budgetX, 100*b.value())
		}
	}
	for _, cfg := range r.configs {
		if cfg.name == "none" {
			errs = append(errs, heat("none", 0))
			continue
		}
		s := plot.Series{Name: cfg.name}
		for i, b := range r.budgets {
			errs = append(errs, heat(cfg.name, b.value()))
			for _, sum := range r.Summary {
				if sum.Policy == cfg.name && sum.Budget == b.value() {
					s.X, s.Y = append(s.X, budgetX[i]), append(s.Y, sum.Accuracy)
				}
			}
		}
		series = append(series, s)
	}
	for _, sum := range r.Summary {
		if sum.Policy == "none" && len(series) > 0 && len(series[0].X) > 0 {
			full := plot.Series{Name: "none (full cache)", Dashed: true}
			for _, x := range series[0].X {
				full.X, full.Y = append(full.X, x), append(full.Y, sum.Accuracy)
			}
			series = append(series, full)
		}
	}
	if len(r.budgets) > 1 && len(series) > 0 {
		xl := "budget (% of the prompt)"
		if r.BudgetUnit == "cells" {
			xl = "budget (cells)"
		}
		errs = append(errs, plot.Lines(filepath.Join(dir, fileName(r.Task, "accuracy-by-budget")), plot.Chart{
			Title: r.Task + ": accuracy against budget", XLabel: xl, YLabel: "accuracy", Series: series, YMin: 0, YMax: 1.3,
		}))
	}
	return errors.Join(errs...)
}
