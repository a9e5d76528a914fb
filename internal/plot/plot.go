// Package plot renders the PNG charts of kvtrim's eval and bench reports:
// needle-in-a-haystack heatmaps (accuracy by context length and depth),
// accuracy against cache budget, perplexity against tokens, and decode
// speed against context length with the ceiling drawn dashed.
//
// It is a thin layer over gonum.org/v1/plot that validates its inputs and
// returns errors instead of panicking. A chart is rendered completely in
// memory before its file is written, so invalid input or a failed render
// leaves no file behind.
package plot

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	gplot "gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// Default size of a chart.
const (
	width  = 16 * vg.Centimeter
	height = 10 * vg.Centimeter
)

// Series is one line of a chart.
type Series struct {
	Name   string // legend entry; an empty name gets none
	X, Y   []float64
	Dashed bool // drawn dashed (e.g. a ceiling or a baseline)
}

// Chart is a line chart with points.
type Chart struct {
	Title, XLabel, YLabel string
	Series                []Series
	LogX                  bool    // logarithmic x axis (all X > 0)
	YMin, YMax            float64 // fixed y range when YMax > YMin, else automatic
}

// Lines writes c as a PNG of about 16x10 cm to path, which must end in
// ".png". Each series gets its own colour and point shape; dashed series are
// drawn with a dashed line. The legend goes in the top corner that the lines
// cross less; with an automatic y range, room is made for it above the data
// (with a fixed one, leave that room in YMax yourself).
//
// Lines returns an error, and writes nothing, if c has no series, a series
// has no points or X and Y of different lengths, any X or Y is NaN or
// infinite (such points are not skipped: filter them out first), LogX is set
// and some X is not positive, or YMin or YMax is NaN or infinite.
func Lines(path string, c Chart) error {
	if err := checkPath(path); err != nil {
		return err
	}
	if err := c.validate(); err != nil {
		return fmt.Errorf("plot %s: %w", path, err)
	}
	return render(path, width, height, func() (*gplot.Plot, error) { return c.plot() })
}

func (c *Chart) validate() error {
	if len(c.Series) == 0 {
		return errors.New("chart has no series")
	}
	for i, s := range c.Series {
		name := s.Name
		if name == "" {
			name = "#" + strconv.Itoa(i)
		}
		if len(s.X) == 0 {
			return fmt.Errorf("series %q has no points", name)
		}
		if len(s.X) != len(s.Y) {
			return fmt.Errorf("series %q: length mismatch: %d X values, %d Y values", name, len(s.X), len(s.Y))
		}
		for j := range s.X {
			x, y := s.X[j], s.Y[j]
			if !finite(x) || !finite(y) {
				return fmt.Errorf("series %q: point %d (%v, %v) is not finite (NaN or Inf)", name, j, x, y)
			}
			if c.LogX && x <= 0 {
				return fmt.Errorf("series %q: point %d: x = %v is not positive, as a log x axis needs", name, j, x)
			}
		}
	}
	if !finite(c.YMin) || !finite(c.YMax) {
		return fmt.Errorf("y range [%v, %v] is not finite", c.YMin, c.YMax)
	}
	return nil
}

func (c *Chart) plot() (*gplot.Plot, error) {
	p := gplot.New()
	p.Title.Text = c.Title
	p.X.Label.Text = c.XLabel
	p.Y.Label.Text = c.YLabel
	p.Add(plotter.NewGrid())

	for i, s := range c.Series {
		xys := make(plotter.XYs, len(s.X))
		for j := range s.X {
			xys[j] = plotter.XY{X: s.X[j], Y: s.Y[j]}
		}
		line, points, err := plotter.NewLinePoints(xys)
		if err != nil {
			return nil, fmt.Errorf("series %q: %w", s.Name, err)
		}
		col := plotutil.Color(i)
		line.Color = col
		line.Width = vg.Points(1.5)
		if s.Dashed {
			line.Dashes = []vg.Length{vg.Points(6), vg.Points(3)}
		}
		points.Color = col
		points.Shape = plotutil.Shape(i)
		p.Add(line, points)
		if s.Name != "" {
			p.Legend.Add(s.Name, line, points)
		}
	}

	if c.LogX {
		setLogX(p, c.Series)
	}
	if c.YMax > c.YMin {
		p.Y.Min, p.Y.Max = c.YMin, c.YMax
	}
	placeLegend(p, c)
	return p, nil
}

// setLogX makes the x axis logarithmic. With few distinct x values (context
// lengths, budgets) they become the ticks; otherwise ticks go at powers of 10.
func setLogX(p *gplot.Plot, series []Series) {
	var xs []float64
	for _, s := range series {
		xs = append(xs, s.X...)
	}
	slices.Sort(xs)
	xs = slices.Compact(xs)
	p.X.Scale = gplot.LogScale{}
	// Give a single x value some room: the default ±1 could reach 0.
	p.X.Min, p.X.Max = xs[0], xs[len(xs)-1]
	if p.X.Min == p.X.Max {
		p.X.Min, p.X.Max = p.X.Min/2, p.X.Max*2
	}
	if len(xs) > 12 {
		p.X.Tick.Marker = gplot.LogTicks{Prec: -1}
		return
	}
	ticks := make(gplot.ConstantTicks, len(xs))
	for i, x := range xs {
		ticks[i] = gplot.Tick{Value: x, Label: strconv.FormatFloat(x, 'g', -1, 64)}
	}
	p.X.Tick.Marker = ticks
}

// placeLegend puts the legend in the top corner that the lines cross less.
// With an automatic y range it first raises the top of the y axis so that
// the legend sits above the data.
func placeLegend(p *gplot.Plot, c *Chart) {
	p.Legend.Top = true
	entries := 0
	for _, s := range c.Series {
		if s.Name != "" {
			entries++
		}
	}
	if entries == 0 {
		return
	}
	if !(c.YMax > c.YMin) && p.Y.Max > p.Y.Min {
		f := min(0.5, 0.07*float64(entries)) // share of the height the legend needs
		p.Y.Max += (p.Y.Max - p.Y.Min) * f / (1 - f)
	}
	norm := func(a *gplot.Axis, v float64) float64 {
		if a.Max <= a.Min {
			return 0.5
		}
		return a.Scale.Normalize(a.Min, a.Max, v)
	}
	// Count samples along the lines, evenly spaced in axis-normalised
	// coordinates, that fall in the top band of each half.
	var left, right int
	count := func(x, y float64) {
		switch {
		case y < 0.7:
		case x < 0.5:
			left++
		default:
			right++
		}
	}
	for _, s := range c.Series {
		x0, y0 := norm(&p.X, s.X[0]), norm(&p.Y, s.Y[0])
		count(x0, y0)
		for j := 1; j < len(s.X); j++ {
			x1, y1 := norm(&p.X, s.X[j]), norm(&p.Y, s.Y[j])
			n := 1 + int(32*math.Hypot(x1-x0, y1-y0))
			for k := 1; k <= n; k++ {
				t := float64(k) / float64(n)
				count(x0+t*(x1-x0), y0+t*(y1-y0))
			}
			x0, y0 = x1, y1
		}
	}
	p.Legend.Left = left < right
}

// checkPath rejects an empty path or one that does not name a PNG file.
func checkPath(path string) error {
	if path == "" {
		return errors.New("plot: empty output path")
	}
	if !strings.EqualFold(filepath.Ext(path), ".png") {
		return fmt.Errorf("plot %s: output path must end in .png", path)
	}
	return nil
}

// render builds a plot, draws it as a PNG of size w x h in memory and writes
// it to path. A panic inside gonum/plot is turned into an error.
func render(path string, w, h vg.Length, build func() (*gplot.Plot, error)) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("plot %s: rendering failed: %v", path, r)
		}
	}()
	p, err := build()
	if err != nil {
		return fmt.Errorf("plot %s: %w", path, err)
	}
	wt, err := p.WriterTo(w, h, "png")
	if err != nil {
		return fmt.Errorf("plot %s: %w", path, err)
	}
	var buf bytes.Buffer
	if _, err := wt.WriteTo(&buf); err != nil {
		return fmt.Errorf("plot %s: encoding PNG: %w", path, err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) && pe.Path == path {
			err = fmt.Errorf("%s: %w", pe.Op, pe.Err) // the path is said once, below
		}
		return fmt.Errorf("plot %s: %w", path, err)
	}
	return nil
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
