package plot

import (
	"image"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// decode reads path as a PNG and checks it has a plausible size.
func decode(t *testing.T, path string) image.Image {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("open output: %v", err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("%s is not a valid PNG: %v", path, err)
	}
	b := img.Bounds()
	if b.Dx() < 300 || b.Dy() < 200 || b.Dx() > 4000 || b.Dy() > 4000 {
		t.Fatalf("%s: implausible size %dx%d", path, b.Dx(), b.Dy())
	}
	return img
}

func TestLines(t *testing.T) {
	dir := t.TempDir()
	charts := map[string]Chart{
		"speed.png": {
			Title: "Decode speed", XLabel: "context length (tokens)", YLabel: "tokens/s",
			LogX: true,
			Series: []Series{
				{Name: "full cache", X: []float64{512, 1024, 2048, 4096}, Y: []float64{90, 85, 70, 50}},
				{Name: "snapkv", X: []float64{512, 1024, 2048, 4096}, Y: []float64{92, 90, 88, 86}},
				{Name: "ceiling", X: []float64{512, 4096}, Y: []float64{100, 100}, Dashed: true},
			},
		},
		"accuracy.png": {
			Title: "Accuracy against budget", XLabel: "budget", YLabel: "accuracy",
			YMin: 0, YMax: 1,
			Series: []Series{
				{Name: "h2o", X: []float64{0.1, 0.2, 0.5, 1}, Y: []float64{0.4, 0.6, 0.9, 1}},
				{Name: "baseline", X: []float64{0.1, 1}, Y: []float64{1, 1}, Dashed: true},
				{X: []float64{0.3}, Y: []float64{0.7}}, // unnamed, single point
			},
		},
		"single-log.png": { // one x value on a log axis must not reach 0
			LogX:   true,
			Series: []Series{{Name: "one", X: []float64{1, 1}, Y: []float64{3, 4}}},
		},
	}
	for name, c := range charts {
		path := filepath.Join(dir, name)
		if err := Lines(path, c); err != nil {
			t.Fatalf("Lines(%s): %v", name, err)
		}
		decode(t, path)
	}
}

func TestLegendCorner(t *testing.T) {
	for _, tc := range []struct {
		y    []float64
		left bool
	}{
		{[]float64{1, 2, 3, 4}, true},  // rising: top left is free
		{[]float64{4, 3, 2, 1}, false}, // falling: top right is free
	} {
		c := Chart{Series: []Series{{Name: "s", X: []float64{1, 2, 3, 4}, Y: tc.y}}}
		p, err := c.plot()
		if err != nil {
			t.Fatal(err)
		}
		if !p.Legend.Top || p.Legend.Left != tc.left {
			t.Errorf("y %v: legend top=%v left=%v, want top, left=%v", tc.y, p.Legend.Top, p.Legend.Left, tc.left)
		}
	}
}

func TestLinesErrors(t *testing.T) {
	dir := t.TempDir()
	ok := []Series{{Name: "a", X: []float64{1, 2}, Y: []float64{1, 2}}}
	cases := []struct {
		name, path, want string
		c                Chart
	}{
		{"no series", "a.png", "no series", Chart{}},
		{"no points", "a.png", "no points", Chart{Series: []Series{{Name: "a"}}}},
		{"mismatch", "a.png", "mismatch", Chart{Series: []Series{{Name: "a", X: []float64{1, 2}, Y: []float64{1}}}}},
		{"NaN", "a.png", "NaN", Chart{Series: []Series{{Name: "a", X: []float64{1, 2}, Y: []float64{1, math.NaN()}}}}},
		{"Inf", "a.png", "Inf", Chart{Series: []Series{{Name: "a", X: []float64{math.Inf(1)}, Y: []float64{1}}}}},
		{"log of zero", "a.png", "positive", Chart{LogX: true, Series: []Series{{Name: "a", X: []float64{0, 1}, Y: []float64{1, 2}}}}},
		{"bad y range", "a.png", "y range", Chart{Series: ok, YMax: math.Inf(1)}},
		{"not png", "a.svg", ".png", Chart{Series: ok}},
		{"no dir", "missing/a.png", "missing", Chart{Series: ok}},
	}
	for _, tc := range cases {
		path := filepath.Join(dir, tc.path)
		err := Lines(path, tc.c)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got error %v, want one containing %q", tc.name, err, tc.want)
		}
		if _, statErr := os.Stat(path); statErr == nil {
			t.Errorf("%s: a file was written despite the error", tc.name)
		}
	}
	if err := Lines("", Chart{Series: ok}); err == nil {
		t.Error("empty path: no error")
	}
}

func TestUnwritable(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	paths := []string{filepath.Join(file, "a.png")} // parent is not a directory
	if os.Getuid() != 0 {                           // root can write anywhere
		ro := filepath.Join(dir, "ro")
		if err := os.Mkdir(ro, 0o555); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, filepath.Join(ro, "a.png"))
	}
	for _, path := range paths {
		err := Lines(path, Chart{Series: []Series{{X: []float64{1}, Y: []float64{1}}}})
		if err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("got error %v, want one naming %s", err, path)
		}
	}
}

func TestHeatmap(t *testing.T) {
	path := filepath.Join(t.TempDir(), "needle.png")
	x := []string{"512", "1024", "2048", "4096"}
	y := []string{"10%", "50%", "90%"}
	v := [][]float64{{1, 1, 0.95, 0.5}, {1, 0.9, 0.6, 0.2}, {1, 1, 1, 0}}
	if err := Heatmap(path, "Needle in a haystack", "context length", "depth", x, y, v); err != nil {
		t.Fatal(err)
	}
	decode(t, path)

	// Many cells: the image grows.
	big := make([][]float64, 12)
	bx, by := make([]string, 20), make([]string, 12)
	for i := range by {
		big[i] = make([]float64, 20)
		by[i] = "d"
	}
	for i := range bx {
		bx[i] = "c"
	}
	path = filepath.Join(t.TempDir(), "big.png")
	if err := Heatmap(path, "", "", "", bx, by, big); err != nil {
		t.Fatal(err)
	}
	decode(t, path)
}

// centroids returns the mean position of reddish and of greenish pixels and
// how many of each there are.
func centroids(img image.Image) (red, green image.Point, nr, ng int) {
	b := img.Bounds()
	for py := b.Min.Y; py < b.Max.Y; py++ {
		for px := b.Min.X; px < b.Max.X; px++ {
			r, g, bl, _ := img.At(px, py).RGBA()
			r, g, bl = r>>8, g>>8, bl>>8
			switch {
			case r > 180 && g < 100 && bl < 100:
				red.X, red.Y, nr = red.X+px, red.Y+py, nr+1
			case g > 120 && r < 100 && bl < 120:
				green.X, green.Y, ng = green.X+px, green.Y+py, ng+1
			}
		}
	}
	if nr > 0 {
		red = red.Div(nr)
	}
	if ng > 0 {
		green = green.Div(ng)
	}
	return red, green, nr, ng
}

func TestHeatmapColours(t *testing.T) {
	dir := t.TempDir()

	// One row: 0 on the left, 1 on the right.
	path := filepath.Join(dir, "row.png")
	if err := Heatmap(path, "t", "x", "y", []string{"a", "b"}, []string{"r"}, [][]float64{{0, 1}}); err != nil {
		t.Fatal(err)
	}
	red, green, nr, ng := centroids(decode(t, path))
	if nr < 1000 || ng < 1000 {
		t.Fatalf("want many red and green pixels, got %d red, %d green", nr, ng)
	}
	if red.X >= green.X {
		t.Errorf("0 cell (red, x=%d) should be left of 1 cell (green, x=%d)", red.X, green.X)
	}

	// One column: yLabels[0] is the top row.
	path = filepath.Join(dir, "col.png")
	if err := Heatmap(path, "t", "x", "y", []string{"a"}, []string{"top", "bottom"}, [][]float64{{1}, {0}}); err != nil {
		t.Fatal(err)
	}
	red, green, nr, ng = centroids(decode(t, path))
	if nr < 1000 || ng < 1000 {
		t.Fatalf("want many red and green pixels, got %d red, %d green", nr, ng)
	}
	if green.Y >= red.Y {
		t.Errorf("top row 1 (green, y=%d) should be above bottom row 0 (red, y=%d)", green.Y, red.Y)
	}

	// All ones: no red at all.
	path = filepath.Join(dir, "ones.png")
	if err := Heatmap(path, "t", "x", "y", []string{"a", "b"}, []string{"r"}, [][]float64{{1, 1}}); err != nil {
		t.Fatal(err)
	}
	if _, _, nr, ng = centroids(decode(t, path)); nr != 0 || ng < 1000 {
		t.Errorf("all-ones heatmap: %d red pixels, %d green; want none red, many green", nr, ng)
	}
}

func TestHeatmapErrors(t *testing.T) {
	dir := t.TempDir()
	x, y := []string{"512", "1024"}, []string{"10%"}
	cases := []struct {
		name, path, want string
		x, y             []string
		v                [][]float64
	}{
		{"no x labels", "a.png", "labels", nil, y, [][]float64{{}}},
		{"no y labels", "a.png", "labels", x, nil, nil},
		{"empty label", "a.png", "empty", []string{"512", ""}, y, [][]float64{{1, 1}}},
		{"too few rows", "a.png", "rows", x, y, nil},
		{"ragged", "a.png", "rectangular", x, []string{"a", "b"}, [][]float64{{1, 1}, {1}}},
		{"NaN", "a.png", "outside", x, y, [][]float64{{1, math.NaN()}}},
		{"above 1", "a.png", "outside", x, y, [][]float64{{1, 95}}},
		{"negative", "a.png", "outside", x, y, [][]float64{{-0.1, 1}}},
		{"no dir", "missing/a.png", "missing", x, y, [][]float64{{1, 0}}},
	}
	for _, tc := range cases {
		path := filepath.Join(dir, tc.path)
		err := Heatmap(path, "t", "x", "y", tc.x, tc.y, tc.v)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got error %v, want one containing %q", tc.name, err, tc.want)
		}
		if _, statErr := os.Stat(path); statErr == nil {
			t.Errorf("%s: a file was written despite the error", tc.name)
		}
	}
}
