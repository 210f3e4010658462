package main

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// readAddrs reads the JSON line with the listen addresses of a server
// subprocess.
func readAddrs(p *process, addrs *upstreamAddrs, timeout time.Duration) error {
	line, err := p.readLine(timeout)
	if err != nil {
		return err
	}
	if err := json.Unmarshal([]byte(line), addrs); err != nil {
		return fmt.Errorf("%s printed %q instead of its addresses: %v", p.name, line, err)
	}
	return nil
}

// cell is the median of one contender's measurements of one row.
type cell struct {
	Throughput  float64 `json:"throughput"`
	CPUPerUnit  float64 `json:"cpu_per_unit"`
	PeakRSSMiB  float64 `json:"peak_rss_mib"`
	PeakAnonMiB float64 `json:"peak_anon_mib"`
	P50         float64 `json:"p50_us,omitempty"`
	P99         float64 `json:"p99_us,omitempty"`
	Runs        int     `json:"runs"`
	Failed      int     `json:"failed"`
}

// row is one workload over one protocol.
type row struct {
	Workload workload        `json:"workload"`
	Proto    string          `json:"proto"`
	Cells    map[string]cell `json:"cells"`
}

// ratioBases are the contenders that the module is compared with.
var ratioBases = []string{contenderNginx, contenderNginxTuned, contenderCaddy, contenderDirectTLS}

// throughputRatio returns module ÷ base of the medians, or 0 when either
// is missing.
func (r row) throughputRatio(base string) float64 {
	m, okM := r.Cells[contenderModule]
	b, okB := r.Cells[base]
	if !okM || !okB || b.Throughput == 0 || m.Runs == m.Failed || b.Runs == b.Failed {
		return 0
	}
	return m.Throughput / b.Throughput
}

func summarize(results []measurement, workloads []workload, protos []string) []row {
	var rows []row
	for _, w := range workloads {
		for _, proto := range protos {
			r := row{Workload: w, Proto: proto, Cells: map[string]cell{}}
			for _, name := range allContenders {
				var ms []measurement
				failed := 0
				for _, m := range results {
					if m.Workload != w.ID || m.Proto != proto || m.Contender != name || m.Round < 0 {
						continue
					}
					if m.Error != "" {
						failed++
						continue
					}
					ms = append(ms, m)
				}
				if len(ms) == 0 && failed == 0 {
					continue
				}
				c := cell{Runs: len(ms) + failed, Failed: failed}
				c.Throughput = median(ms, func(m measurement) float64 { return m.throughput(w.PerRequest) })
				c.CPUPerUnit = median(ms, func(m measurement) float64 { return m.cpuPerUnit(w.PerRequest) })
				c.PeakRSSMiB = median(ms, func(m measurement) float64 { return float64(m.PeakRSS) / (1 << 20) })
				c.PeakAnonMiB = median(ms, func(m measurement) float64 { return float64(m.PeakAnon) / (1 << 20) })
				if w.PerRequest {
					c.P50 = median(ms, func(m measurement) float64 { return m.Result.P50 })
					c.P99 = median(ms, func(m measurement) float64 { return m.Result.P99 })
				}
				r.Cells[name] = c
			}
			if len(r.Cells) > 0 {
				rows = append(rows, r)
			}
		}
	}
	return rows
}

func median(ms []measurement, value func(measurement) float64) float64 {
	if len(ms) == 0 {
		return 0
	}
	values := make([]float64, len(ms))
	for i, m := range ms {
		values[i] = value(m)
	}
	slices.Sort(values)
	n := len(values)
	if n%2 == 1 {
		return values[n/2]
	}
	return (values[n/2-1] + values[n/2]) / 2
}

// runReport is summary.json.
type runReport struct {
	Started    time.Time         `json:"started"`
	Note       string            `json:"note,omitempty"`
	Machine    map[string]string `json:"machine"`
	Settings   map[string]string `json:"settings"`
	StartRSS   map[string]int64  `json:"start_rss_bytes"`
	Rounds     []roundInfo       `json:"rounds"`
	Rows       []row             `json:"rows"`
	Contenders []string          `json:"contenders"`
}

// writeResults writes measurements.json, measurements.csv, summary.json,
// tables.md and the chart. It runs after every round, so an interrupted
// run still leaves its measurements. With -doc, the final call also
// replaces the generated section of that file.
func (r *runner) writeResults(started time.Time, workloads []workload, final bool) error {
	if err := writeJSON(filepath.Join(r.runDir, "measurements.json"), r.results); err != nil {
		return err
	}
	if err := r.writeCSV(filepath.Join(r.runDir, "measurements.csv"), workloads); err != nil {
		return err
	}
	rows := summarize(r.results, workloads, r.cfg.protos)
	report := runReport{
		Started:  started,
		Note:     r.cfg.note,
		Machine:  r.machineInfo(),
		Settings: r.settings(),
		StartRSS: r.startRSS,
		Rounds:   r.rounds,
		Rows:     rows,
	}
	for _, c := range r.contenders {
		report.Contenders = append(report.Contenders, c.name)
	}
	if err := writeJSON(filepath.Join(r.runDir, "summary.json"), report); err != nil {
		return err
	}
	chartPath := r.cfg.chartPath
	if chartPath == "" {
		chartPath = filepath.Join(r.runDir, "ratios.png")
	}
	if err := os.MkdirAll(filepath.Dir(chartPath), 0o755); err != nil {
		return err
	}
	if err := drawRatioChart(chartPath, rows); err != nil {
		return fmt.Errorf("drawing the chart: %v", err)
	}
	tables := renderTables(report)
	if err := os.WriteFile(filepath.Join(r.runDir, "tables.md"), []byte(tables), 0o644); err != nil {
		return err
	}
	if final && r.cfg.docPath != "" {
		return replaceGeneratedSection(r.cfg.docPath, tables)
	}
	return nil
}

func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}

func (r *runner) writeCSV(path string, workloads []workload) error {
	perRequest := map[string]bool{}
	for _, w := range workloads {
		perRequest[w.ID] = w.PerRequest
	}
	var buf bytes.Buffer
	out := csv.NewWriter(&buf)
	out.Write([]string{"round", "workload", "proto", "contender", "throughput", "unit", "bytes", "requests", "seconds",
		"proxy_cpu_s", "cpu_per_unit", "upstream_cpu_s", "peak_rss_mib", "peak_anon_mib", "p50_us", "p99_us", "protocol", "tls", "error"})
	for _, m := range r.results {
		pr := perRequest[m.Workload]
		unitName, cpuUnit := "MiB/s", "s/GiB"
		if pr {
			unitName, cpuUnit = "req/s", "s/1000req"
		}
		out.Write([]string{
			strconv.Itoa(m.Round), m.Workload, m.Proto, m.Contender,
			strconv.FormatFloat(m.throughput(pr), 'f', 2, 64), unitName,
			strconv.FormatInt(m.Result.Bytes, 10), strconv.FormatInt(m.Result.Requests, 10),
			strconv.FormatFloat(m.Result.Seconds, 'f', 3, 64),
			strconv.FormatFloat(m.ProxyCPU, 'f', 2, 64),
			strconv.FormatFloat(m.cpuPerUnit(pr), 'f', 3, 64) + " " + cpuUnit,
			strconv.FormatFloat(m.UpstreamCPU, 'f', 2, 64),
			strconv.FormatFloat(float64(m.PeakRSS)/(1<<20), 'f', 1, 64),
			strconv.FormatFloat(float64(m.PeakAnon)/(1<<20), 'f', 1, 64),
			strconv.FormatFloat(m.Result.P50, 'f', 0, 64), strconv.FormatFloat(m.Result.P99, 'f', 0, 64),
			m.Result.Protocol, m.Result.TLS, m.Error,
		})
	}
	out.Flush()
	if err := out.Error(); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

func (r *runner) machineInfo() map[string]string {
	info := map[string]string{
		"cpus":   strconv.Itoa(runtime.NumCPU()),
		"go":     runtime.Version(),
		"kernel": strings.TrimSpace(readFileOr("/proc/sys/kernel/osrelease", "unknown")),
	}
	for line := range strings.Lines(readFileOr("/proc/cpuinfo", "")) {
		if v, ok := strings.CutPrefix(line, "model name"); ok {
			info["cpu_model"] = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
			break
		}
	}
	if out, err := exec.Command(r.cfg.nginxPath, "-v").CombinedOutput(); err == nil {
		info["nginx"] = strings.TrimSpace(string(out))
	}
	if out, err := exec.Command(r.cfg.caddy.stockBinary, "version").Output(); err == nil {
		info["caddy"] = strings.TrimSpace(string(out))
	}
	return info
}

func (r *runner) settings() map[string]string {
	return map[string]string{
		"rounds":                   strconv.Itoa(r.cfg.rounds),
		"size":                     formatSize(r.cfg.size),
		"parallel_size":            formatSize(r.cfg.parallelSize),
		"memory_size":              formatSize(r.cfg.memorySize),
		"manifest_duration":        r.cfg.duration.String(),
		"image":                    fmt.Sprintf("%d x %s", r.cfg.layers, formatSize(r.cfg.layerSize)),
		"caddy_env":                strings.Join(r.cfg.caddy.env, " "),
		"caddy_server_options":     strings.Join(r.cfg.caddy.serverOptions, "; "),
		"module_caddy":             r.cfg.caddy.moduleBinary,
		"candidate_caddy":          r.cfg.caddy.candidateBinary,
		"candidate_env":            strings.Join(r.cfg.caddy.candidateEnv, " "),
		"caddy_global_options":     strings.Join(r.cfg.caddy.globalOptions, "; "),
		"candidate_global_options": strings.Join(r.cfg.caddy.candidateGlobalOptions, "; "),
	}
}

func readFileOr(path, fallback string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fallback
	}
	return string(data)
}

// Markers around the part of the -doc file that each run replaces.
const (
	generatedBegin = "<!-- generated by bench/run.sh: begin -->"
	generatedEnd   = "<!-- generated by bench/run.sh: end -->"
)

func replaceGeneratedSection(path, content string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	text := string(data)
	begin := strings.Index(text, generatedBegin)
	end := strings.Index(text, generatedEnd)
	if begin < 0 || end < begin {
		return fmt.Errorf("%s has no %q ... %q section to replace", path, generatedBegin, generatedEnd)
	}
	text = text[:begin+len(generatedBegin)] + "\n" + content + "\n" + text[end:]
	return os.WriteFile(path, []byte(text), 0o644)
}

var contenderTitles = map[string]string{
	contenderDirect:      "direct",
	contenderDirectTLS:   "direct TLS",
	contenderNginx:       "nginx",
	contenderNginxTuned:  "nginx tuned",
	contenderCaddy:       "caddy",
	contenderModule:      "module",
	contenderModuleSplit: "module split",
	contenderCandidate:   "candidate",
}

var ratioTitles = map[string]string{
	contenderNginx:      "÷ nginx",
	contenderNginxTuned: "÷ nginx tuned",
	contenderCaddy:      "÷ caddy",
	contenderDirectTLS:  "÷ direct TLS",
}

// renderTables writes the markdown section of a run: settings, load
// averages, then one table each for throughput, proxy CPU, latency and
// peak memory.
func renderTables(rep runReport) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Run of %s UTC", rep.Started.UTC().Format("2006-01-02 15:04"))
	if rep.Note != "" {
		fmt.Fprintf(&b, " (%s)", rep.Note)
	}
	fmt.Fprintf(&b, ": %s rounds; blobs %s, parallel GETs 8 x %s, memory phase 8 x %s; manifest runs of %s; image %s.\n\n",
		rep.Settings["rounds"], rep.Settings["size"], rep.Settings["parallel_size"], rep.Settings["memory_size"],
		rep.Settings["manifest_duration"], rep.Settings["image"])
	fmt.Fprintf(&b, "Machine: %s CPUs (%s), Linux %s, %s, %s, %s.",
		rep.Machine["cpus"], rep.Machine["cpu_model"], rep.Machine["kernel"], rep.Machine["go"],
		strings.TrimPrefix(rep.Machine["nginx"], "nginx version: "), firstField(rep.Machine["caddy"]))
	if env := rep.Settings["caddy_env"]; env != "" {
		fmt.Fprintf(&b, " Caddy environment: `%s`.", env)
	}
	if opts := rep.Settings["caddy_server_options"]; opts != "" {
		fmt.Fprintf(&b, " Caddy server options: `%s`.", opts)
	}
	b.WriteString("\n\nLoad averages (1, 5, 15 min) around each round; round 0 is the memory phase:\n\n| round | before | after | duration |\n|---|---|---|---|\n")
	for _, r := range rep.Rounds {
		fmt.Fprintf(&b, "| %d | %s | %s | %.0f s |\n", r.Round, r.LoadBefore, r.LoadAfter, r.DurationSec)
	}

	present := presentContenders(rep.Rows)
	var proxies []string
	for _, name := range present {
		if name != contenderDirect && name != contenderDirectTLS {
			proxies = append(proxies, name)
		}
	}

	b.WriteString("\n#### Throughput (median; MiB/s, or requests/s for manifests)\n\n")
	header(&b, present, true, slices.Contains(present, contenderCandidate))
	for _, r := range rep.Rows {
		if r.Workload.Memory {
			continue
		}
		fmt.Fprintf(&b, "| %s | %s |", r.Workload.Label, r.Proto)
		for _, name := range present {
			b.WriteString(" " + formatCell(r, name, func(c cell) float64 { return c.Throughput }) + " |")
		}
		for _, base := range ratioBases {
			if v := r.throughputRatio(base); v > 0 {
				fmt.Fprintf(&b, " %.2f |", v)
			} else {
				b.WriteString(" – |")
			}
		}
		if slices.Contains(present, contenderCandidate) {
			fmt.Fprintf(&b, " %s |", candidateRatio(r, func(c cell) float64 { return c.Throughput }))
		}
		b.WriteString("\n")
	}

	b.WriteString("\n#### Proxy CPU (median; seconds per GiB, or per 1000 requests for manifests; lower is better)\n\n")
	header(&b, proxies, false, slices.Contains(present, contenderCandidate))
	for _, r := range rep.Rows {
		if r.Workload.Memory {
			continue
		}
		fmt.Fprintf(&b, "| %s | %s |", r.Workload.Label, r.Proto)
		for _, name := range proxies {
			b.WriteString(" " + formatCell(r, name, func(c cell) float64 { return c.CPUPerUnit }) + " |")
		}
		if slices.Contains(present, contenderCandidate) {
			fmt.Fprintf(&b, " %s |", candidateRatio(r, func(c cell) float64 { return c.CPUPerUnit }))
		}
		b.WriteString("\n")
	}

	b.WriteString("\n#### Manifest latency (median of per-run p50 / p99, µs)\n\n")
	header(&b, present, false, false)
	for _, r := range rep.Rows {
		if !r.Workload.PerRequest {
			continue
		}
		fmt.Fprintf(&b, "| %s | %s |", r.Workload.Label, r.Proto)
		for _, name := range present {
			c, ok := r.Cells[name]
			if !ok || c.Runs == c.Failed {
				b.WriteString(" – |")
				continue
			}
			fmt.Fprintf(&b, " %.0f / %.0f |", c.P50, c.P99)
		}
		b.WriteString("\n")
	}

	b.WriteString("\n#### Proxy peak resident memory (median VmHWM during the workload, MiB, with the anonymous part in brackets; nginx: sum over master and workers)\n\n")
	header(&b, proxies, false, false)
	fmt.Fprintf(&b, "| after start | – |")
	for _, name := range proxies {
		if rss, ok := rep.StartRSS[name]; ok && rss > 0 {
			fmt.Fprintf(&b, " %.1f |", float64(rss)/(1<<20))
		} else {
			b.WriteString(" – |")
		}
	}
	b.WriteString("\n")
	for _, r := range rep.Rows {
		if r.Workload.PerRequest {
			continue
		}
		fmt.Fprintf(&b, "| %s | %s |", r.Workload.Label, r.Proto)
		for _, name := range proxies {
			c, ok := r.Cells[name]
			if !ok || c.Runs == c.Failed {
				b.WriteString(" – |")
				continue
			}
			fmt.Fprintf(&b, " %.1f (%.1f) |", c.PeakRSSMiB, c.PeakAnonMiB)
		}
		b.WriteString("\n")
	}
	return b.String()
}

func presentContenders(rows []row) []string {
	var names []string
	for _, name := range allContenders {
		for _, r := range rows {
			if _, ok := r.Cells[name]; ok {
				names = append(names, name)
				break
			}
		}
	}
	return names
}

// header writes a table header with a column per contender, then the
// module's ratio columns if ratios is set and the candidate's if
// candidate is set.
func header(b *strings.Builder, names []string, ratios, candidate bool) {
	b.WriteString("| workload | proto |")
	sep := "|---|---|"
	for _, name := range names {
		b.WriteString(" " + contenderTitles[name] + " |")
		sep += "---:|"
	}
	if ratios {
		for _, base := range ratioBases {
			b.WriteString(" module " + ratioTitles[base] + " |")
			sep += "---:|"
		}
	}
	if candidate {
		b.WriteString(" candidate ÷ module |")
		sep += "---:|"
	}
	b.WriteString("\n" + sep + "\n")
}

func formatCell(r row, name string, value func(cell) float64) string {
	c, ok := r.Cells[name]
	if !ok {
		return "–"
	}
	if c.Runs == c.Failed {
		return "failed"
	}
	s := formatFloat(value(c))
	if c.Failed > 0 {
		s += fmt.Sprintf(" (%d failed)", c.Failed)
	}
	return s
}

func firstField(s string) string {
	if fields := strings.Fields(s); len(fields) > 0 {
		return "Caddy " + fields[0]
	}
	return "Caddy"
}

func candidateRatio(r row, value func(cell) float64) string {
	c, okC := r.Cells[contenderCandidate]
	m, okM := r.Cells[contenderModule]
	if !okC || !okM || value(m) == 0 || c.Runs == c.Failed || m.Runs == m.Failed {
		return "–"
	}
	return fmt.Sprintf("%.2f", value(c)/value(m))
}

// runReportCommand writes the tables of an earlier run again, to stdout
// or into the generated section of a markdown file, for example after a
// change to the tables' layout.
func runReportCommand(args []string) error {
	flags := flag.NewFlagSet("report", flag.ContinueOnError)
	summaryPath := flags.String("summary", "", "summary.json `file` of a run")
	docPath := flags.String("doc", "", "markdown `file` whose generated section receives the tables (default: print them)")
	if err := flags.Parse(args); err != nil {
		return err
	}
	report, err := readSummary(*summaryPath)
	if err != nil {
		return err
	}
	tables := renderTables(report)
	if *docPath == "" {
		_, err := os.Stdout.WriteString(tables)
		return err
	}
	return replaceGeneratedSection(*docPath, tables)
}
