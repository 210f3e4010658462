package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"image/color"
	"math"
	"os"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// chartSeries are the bars of each workload: the module's throughput
// divided by that of each contender.
var chartSeries = []struct {
	base  string
	title string
	color color.RGBA
}{
	{contenderNginx, "module ÷ nginx as written", color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}},
	{contenderNginxTuned, "module ÷ nginx tuned", color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff}},
	{contenderCaddy, "module ÷ stock caddy", color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}},
}

// runChart draws the chart of an earlier run again, for example after a
// change to the chart's layout.
func runChart(args []string) error {
	flags := flag.NewFlagSet("chart", flag.ContinueOnError)
	summaryPath := flags.String("summary", "", "summary.json `file` of a run")
	out := flags.String("out", "ratios.png", "PNG `file` to write")
	if err := flags.Parse(args); err != nil {
		return err
	}
	report, err := readSummary(*summaryPath)
	if err != nil {
		return err
	}
	return drawRatioChart(*out, report.Rows)
}

func readSummary(path string) (runReport, error) {
	var report runReport
	data, err := os.ReadFile(path)
	if err != nil {
		return report, err
	}
	if err := json.Unmarshal(data, &report); err != nil {
		return report, fmt.Errorf("reading %s: %v", path, err)
	}
	return report, nil
}

// drawRatioChart draws one group of horizontal bars per workload and
// protocol, with a line at 1.0: a bar that ends right of the line means
// the module moved more bytes or served more requests per second.
func drawRatioChart(path string, rows []row) error {
	var plotted []row
	for _, r := range rows {
		if !r.Workload.Memory && r.throughputRatio(contenderNginx)+r.throughputRatio(contenderNginxTuned)+r.throughputRatio(contenderCaddy) > 0 {
			plotted = append(plotted, r)
		}
	}
	p := plot.New()
	p.Title.Text = "docker_registry module throughput ÷ that of nginx and stock Caddy"
	p.X.Label.Text = "ratio (above 1.0: the module is faster)"
	if len(plotted) == 0 {
		return p.Save(8*vg.Inch, 3*vg.Inch, path)
	}

	// the first row at the top: gonum counts categories from the bottom
	labels := make([]string, len(plotted))
	for i, r := range plotted {
		labels[len(plotted)-1-i] = fmt.Sprintf("%s, %s", r.Workload.Label, r.Proto)
	}
	const barWidth = 6 * vg.Millimeter
	maxRatio := 1.2
	for _, r := range plotted {
		for _, s := range chartSeries {
			maxRatio = math.Max(maxRatio, r.throughputRatio(s.base))
		}
	}
	// a few ratios far above 1 would squeeze the rest against the axis,
	// so the axis ends at chartMaxRatio and longer bars end there
	xMax := math.Min(math.Ceil(maxRatio*10+1)/10, chartMaxRatio)
	for i, s := range chartSeries {
		values := make(plotter.Values, len(plotted))
		for j, r := range plotted {
			values[len(plotted)-1-j] = math.Min(r.throughputRatio(s.base), xMax)
		}
		bars, err := plotter.NewBarChart(values, barWidth)
		if err != nil {
			return err
		}
		bars.Horizontal = true
		bars.Color = s.color
		bars.LineStyle.Width = 0
		bars.Offset = vg.Length(1-i) * barWidth
		p.Add(bars)
		p.Legend.Add(s.title, bars)
	}

	parity, err := plotter.NewLine(plotter.XYs{{X: 1, Y: -0.6}, {X: 1, Y: float64(len(plotted)) - 0.4}})
	if err != nil {
		return err
	}
	parity.LineStyle.Width = vg.Points(1.5)
	parity.LineStyle.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
	parity.LineStyle.Color = color.Gray{Y: 0x40}
	p.Add(parity)
	p.Add(plotter.NewGrid())

	p.NominalY(labels...)
	p.X.Min = 0
	p.X.Max = xMax
	if maxRatio > xMax {
		p.X.Label.Text += fmt.Sprintf("; bars that reach %.1f are longer", xMax)
	}
	// room below the last group for the legend
	p.Y.Min = -2
	p.Legend.Top = false
	p.Legend.Left = false
	p.Legend.XOffs = -2 * vg.Millimeter
	p.Legend.YOffs = 2 * vg.Millimeter
	p.Legend.TextStyle.XAlign = draw.XRight

	// gonum places the longest workload labels at the very left edge, so
	// the plot is drawn with a margin
	width := 9 * vg.Inch
	height := vg.Length(len(plotted))*3.8*barWidth + 3*vg.Centimeter
	canvas := vgimg.New(width, height)
	p.Draw(draw.Crop(draw.New(canvas), 4*vg.Millimeter, -4*vg.Millimeter, 2*vg.Millimeter, -2*vg.Millimeter))
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: canvas}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// chartMaxRatio is the largest ratio that the chart's axis shows.
const chartMaxRatio = 2.5
