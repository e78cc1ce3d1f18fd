package main

import (
	"fmt"
	"image/color"
	"math"
	"slices"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"github.com/weir-dev/weir/test/e2e/framework"
)

// Marker is a labelled moment on the chart (a new version, a rollback).
type Marker struct {
	At    time.Time
	Label string
}

// writeChart draws the demo's timeline to a PNG: the canary weight, the
// success rate and the p99 latency the load generator saw, per second.
func writeChart(path string, start time.Time, points []framework.Point, samples []framework.Sample, markers []Marker) error {
	end := time.Now()
	secs := func(t time.Time) float64 { return t.Sub(start).Seconds() }

	weight := plotter.XYs{}
	last := int32(0)
	for _, p := range points {
		if p.At.Before(start) {
			last = p.Weight
			continue
		}
		weight = append(weight, plotter.XY{X: secs(p.At), Y: float64(last)}, plotter.XY{X: secs(p.At), Y: float64(p.Weight)})
		last = p.Weight
	}
	weight = append(plotter.XYs{{X: 0, Y: float64(weightAt(points, start))}}, weight...)
	weight = append(weight, plotter.XY{X: secs(end), Y: float64(last)})

	success, p99 := perSecond(start, end, samples)

	span := secs(end)
	plots := [][]*plot.Plot{{
		panel("canary weight (%)", 0, 105, span, markers, start, line(weight, color.RGBA{R: 31, G: 119, B: 180, A: 255})),
	}, {
		panel("success rate seen by clients (%)", math.Max(0, minY(success)-5), 101, span, markers, start, line(success, color.RGBA{R: 44, G: 160, B: 44, A: 255})),
	}, {
		panel("p99 latency seen by clients (ms)", 0, math.Max(10, maxY(p99)*1.1), span, markers, start, line(p99, color.RGBA{R: 214, G: 39, B: 40, A: 255})),
	}}
	plots[2][0].X.Label.Text = "seconds since the demo started"

	const w, h = 12 * vg.Inch, 9 * vg.Inch
	img := vgimg.New(w, h)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 3, Cols: 1, PadTop: vg.Points(8), PadBottom: vg.Points(8), PadLeft: vg.Points(8), PadRight: vg.Points(8), PadY: vg.Points(8)}
	canvases := plot.Align(plots, tiles, dc)
	for i := range plots {
		plots[i][0].Draw(canvases[i][0])
	}
	return savePNG(path, img)
}

func weightAt(points []framework.Point, t time.Time) int32 {
	w := int32(0)
	for _, p := range points {
		if p.At.After(t) {
			break
		}
		w = p.Weight
	}
	return w
}

// perSecond buckets the samples by second: the share of non-5xx answers
// and the p99 latency in milliseconds.
func perSecond(start, end time.Time, samples []framework.Sample) (success, p99 plotter.XYs) {
	n := int(end.Sub(start).Seconds()) + 1
	buckets := make([][]framework.Sample, n)
	for _, s := range samples {
		i := int(s.At.Sub(start).Seconds())
		if i >= 0 && i < n {
			buckets[i] = append(buckets[i], s)
		}
	}
	for i, b := range buckets {
		if len(b) == 0 {
			continue
		}
		ok := 0
		lat := make([]float64, 0, len(b))
		for _, s := range b {
			if s.Code != 0 && s.Code < 500 {
				ok++
			}
			lat = append(lat, float64(s.Latency)/float64(time.Millisecond))
		}
		slices.Sort(lat)
		x := float64(i) + 0.5
		success = append(success, plotter.XY{X: x, Y: 100 * float64(ok) / float64(len(b))})
		p99 = append(p99, plotter.XY{X: x, Y: lat[int(math.Ceil(0.99*float64(len(lat))))-1]})
	}
	return success, p99
}

func line(xys plotter.XYs, c color.Color) *plotter.Line {
	l, err := plotter.NewLine(xys)
	if err != nil {
		l, _ = plotter.NewLine(plotter.XYs{{}})
	}
	l.Color = c
	l.Width = vg.Points(1.5)
	return l
}

func panel(title string, ymin, ymax, span float64, markers []Marker, start time.Time, l *plotter.Line) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.X.Min, p.X.Max = 0, span
	p.Y.Min, p.Y.Max = ymin, ymax
	p.Add(plotter.NewGrid(), l)
	for _, m := range markers {
		x := m.At.Sub(start).Seconds()
		v, err := plotter.NewLine(plotter.XYs{{X: x, Y: ymin}, {X: x, Y: ymax}})
		if err != nil {
			continue
		}
		v.Color = color.Gray{Y: 120}
		v.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		p.Add(v)
		if labels, err := plotter.NewLabels(plotter.XYLabels{XYs: plotter.XYs{{X: x, Y: ymax}}, Labels: []string{" " + m.Label}}); err == nil {
			labels.TextStyle[0].Font.Size = vg.Points(9)
			labels.TextStyle[0].YAlign = draw.YTop
			p.Add(labels)
		}
	}
	return p
}

func minY(xys plotter.XYs) float64 {
	m := 100.0
	for _, p := range xys {
		m = math.Min(m, p.Y)
	}
	return m
}

func maxY(xys plotter.XYs) float64 {
	m := 0.0
	for _, p := range xys {
		m = math.Max(m, p.Y)
	}
	return m
}

func savePNG(path string, img *vgimg.Canvas) error {
	f, err := createFile(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("failed to write %s: %w", path, err)
	}
	return f.Close()
}
