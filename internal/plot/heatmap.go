package plot

import (
	"fmt"
	"image/color"
	"math"

	gplot "gonum.org/v1/plot"
	"gonum.org/v1/plot/palette"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/text"
	"gonum.org/v1/plot/vg"
)

// Heatmap writes a PNG heatmap to path, which must end in ".png":
// values[y][x] in [0,1] (accuracy), x labels along the bottom (e.g. context
// lengths "512", "1024"), y labels on the left (e.g. depths "10%", "50%"),
// each cell annotated with its value as a percentage (e.g. "95%"), a colour
// scale from red (0) through yellow to green (1), and the title on top.
//
// values[0] is the top row, labelled yLabels[0]; values[i][0] is the left
// column, labelled xLabels[0]. The image is at least 16x10 cm and grows with
// the number of cells.
//
// Heatmap returns an error, and writes nothing, if either label list is
// empty or holds an empty label, if values does not have len(yLabels) rows
// of len(xLabels) values each, or if a value is NaN or outside [0,1]
// (such cells are not skipped).
func Heatmap(path, title, xLabel, yLabel string, xLabels, yLabels []string, values [][]float64) error {
	if err := checkPath(path); err != nil {
		return err
	}
	if err := validateGrid(xLabels, yLabels, values); err != nil {
		return fmt.Errorf("plot %s: %w", path, err)
	}
	w := max(width, 2*vg.Centimeter+vg.Length(len(xLabels))*1.4*vg.Centimeter)
	h := max(height, 2.5*vg.Centimeter+vg.Length(len(yLabels))*0.9*vg.Centimeter)
	return render(path, w, h, func() (*gplot.Plot, error) {
		return heatmapPlot(title, xLabel, yLabel, xLabels, yLabels, values)
	})
}

func validateGrid(xLabels, yLabels []string, values [][]float64) error {
	if len(xLabels) == 0 || len(yLabels) == 0 {
		return fmt.Errorf("heatmap needs x and y labels (got %d x labels, %d y labels)", len(xLabels), len(yLabels))
	}
	for _, labels := range [][]string{xLabels, yLabels} {
		for i, l := range labels {
			if l == "" {
				return fmt.Errorf("heatmap label %d of %q is empty", i, labels)
			}
		}
	}
	if len(values) != len(yLabels) {
		return fmt.Errorf("heatmap has %d rows of values but %d y labels", len(values), len(yLabels))
	}
	for y, row := range values {
		if len(row) != len(xLabels) {
			return fmt.Errorf("heatmap values not rectangular: row %d has %d values, want %d (one per x label)", y, len(row), len(xLabels))
		}
		for x, v := range row {
			if !(v >= 0 && v <= 1) { // also catches NaN
				return fmt.Errorf("heatmap value [%d][%d] = %v is outside [0,1]", y, x, v)
			}
		}
	}
	return nil
}

func heatmapPlot(title, xLabel, yLabel string, xLabels, yLabels []string, values [][]float64) (*gplot.Plot, error) {
	g := grid(values)
	hm := plotter.NewHeatMap(g, redYellowGreen(101))
	hm.Min, hm.Max = 0, 1 // fixed scale, also when all cells are equal

	cols, rows := g.Dims()
	var cells plotter.XYLabels
	for c := range cols {
		for r := range rows {
			cells.XYs = append(cells.XYs, plotter.XY{X: g.X(c), Y: g.Y(r)})
			cells.Labels = append(cells.Labels, fmt.Sprintf("%.0f%%", 100*g.Z(c, r)))
		}
	}
	labels, err := plotter.NewLabels(cells)
	if err != nil {
		return nil, err
	}
	for i := range labels.TextStyle {
		labels.TextStyle[i].XAlign = text.XCenter
		labels.TextStyle[i].YAlign = text.YCenter
	}

	p := gplot.New()
	p.Title.Text = title
	p.X.Label.Text = xLabel
	p.Y.Label.Text = yLabel
	p.Add(hm, labels)
	p.NominalX(xLabels...)
	top := make([]string, len(yLabels)) // grid row 0 is the bottom one
	for i, l := range yLabels {
		top[len(yLabels)-1-i] = l
	}
	p.NominalY(top...)
	return p, nil
}

// grid adapts values[y][x], top row first, to plotter.GridXYZ, whose row 0
// is at the bottom. Cell (c, r) is centred on (c, r).
type grid [][]float64

func (g grid) Dims() (c, r int)   { return len(g[0]), len(g) }
func (g grid) Z(c, r int) float64 { return g[len(g)-1-r][c] }
func (g grid) X(c int) float64    { return float64(c) }
func (g grid) Y(r int) float64    { return float64(r) }

var _ plotter.GridXYZ = grid(nil)

// rygPalette is a palette.Palette running from red through yellow to green.
type rygPalette []color.Color

func (p rygPalette) Colors() []color.Color { return p }

var _ palette.Palette = rygPalette(nil)

// redYellowGreen returns n colours (at least 2), evenly spaced from red
// (index 0) through yellow (the middle) to green (index n-1).
func redYellowGreen(n int) palette.Palette {
	n = max(n, 2)
	red := color.RGBA{R: 215, G: 48, B: 39, A: 255}
	yellow := color.RGBA{R: 250, G: 220, B: 80, A: 255}
	green := color.RGBA{R: 26, G: 152, B: 80, A: 255}
	mix := func(a, b color.RGBA, t float64) color.Color {
		f := func(x, y uint8) uint8 { return uint8(math.Round(float64(x) + t*(float64(y)-float64(x)))) }
		return color.RGBA{R: f(a.R, b.R), G: f(a.G, b.G), B: f(a.B, b.B), A: 255}
	}
	p := make(rygPalette, n)
	for i := range p {
		t := float64(i) / float64(n-1)
		if t <= 0.5 {
			p[i] = mix(red, yellow, 2*t)
		} else {
			p[i] = mix(yellow, green, 2*t-1)
		}
	}
	return p
}
