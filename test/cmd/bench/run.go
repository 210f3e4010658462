package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// runConfig holds the flags of "bench run".
type runConfig struct {
	rounds       int
	size         int64
	parallelSize int64
	memorySize   int64
	duration     time.Duration
	layers       int
	layerSize    int64
	quick        bool
	memory       bool
	profile      bool

	contenders []string
	workloads  []string
	protos     []string

	nginxPath string
	caddy     caddyOptions

	outDir    string
	chartPath string
	docPath   string
	keep      bool
	note      string
}

func parseRunFlags(args []string) (*runConfig, error) {
	cfg := &runConfig{}
	flags := flag.NewFlagSet("run", flag.ContinueOnError)
	flags.IntVar(&cfg.rounds, "rounds", 3, "`number` of rounds; every contender runs every workload once per round")
	size := flags.String("size", "1GiB", "`size` of the single blob GET, PUT and PATCH")
	parallelSize := flags.String("parallel-size", "", "`size` of each of the 8 parallel blob GETs (default: size/4)")
	memorySize := flags.String("memory-size", "", "`size` of each of the 8 parallel transfers of the memory phase, which also runs at a tenth of it (default: size)")
	flags.DurationVar(&cfg.duration, "duration", 2*time.Second, "`duration` of each manifest measurement")
	flags.IntVar(&cfg.layers, "layers", 4, "`number` of layers of the image that is pushed and pulled")
	layerSize := flags.String("layer-size", "16MiB", "`size` of each image layer")
	flags.BoolVar(&cfg.quick, "quick", false, "a short run (1 round, 128 MiB blobs, 1 s manifest runs, 4 MiB layers) to check the setup; explicit flags still win")
	flags.BoolVar(&cfg.memory, "memory", true, "run the memory phase after the rounds")
	flags.BoolVar(&cfg.profile, "profile", false, "after the rounds, take CPU and allocation profiles of the Caddy contenders through their admin endpoints (not counted in the results)")
	contenders := flags.String("contenders", strings.Join(allContenders[:len(allContenders)-1], ","), "comma-separated `list` of contenders")
	workloads := flags.String("workloads", "", "comma-separated `list` of workload ids or id prefixes to run (default: all)")
	protos := flags.String("protos", "h1,h2", "comma-separated `list` of client protocols")
	flags.StringVar(&cfg.nginxPath, "nginx", "/usr/sbin/nginx", "nginx `binary`")
	flags.StringVar(&cfg.caddy.stockBinary, "caddy", "", "Caddy `binary` for the stock reverse_proxy contender, built from cmd/caddy (required)")
	flags.StringVar(&cfg.caddy.moduleBinary, "module-caddy", "", "Caddy `binary` for the module contenders (default: -caddy)")
	flags.StringVar(&cfg.caddy.candidateBinary, "candidate-caddy", "", "Caddy `binary` built from a modified copy of the repository; adds the candidate contender")
	candidateEnv := flags.String("candidate-env", "", "comma-separated `list` of environment settings for the candidate only, after -caddy-env")
	caddyEnv := flags.String("caddy-env", "", "comma-separated `list` of environment settings for every Caddy process, such as GOGC=200")
	globalOptions := flags.String("caddy-global-options", "", "semicolon-separated `list` of extra lines for Caddy's global options block")
	candidateGlobalOptions := flags.String("candidate-global-options", "", "semicolon-separated `list` of extra global option lines for the candidate only")
	serverOptions := flags.String("caddy-server-options", "", "semicolon-separated `list` of lines for Caddy's global servers block")
	flags.StringVar(&cfg.outDir, "out", "results/bench", "`directory` for raw results; each run writes a timestamped directory below it")
	flags.StringVar(&cfg.chartPath, "chart", "", "PNG `file` for the ratio chart (default: the run's directory)")
	flags.StringVar(&cfg.docPath, "doc", "", "markdown `file` whose generated section receives the tables (none if empty)")
	flags.BoolVar(&cfg.keep, "keep", false, "keep the temporary directory with configurations and server logs")
	flags.StringVar(&cfg.note, "note", "", "free `text` stored with the results, such as the change under test")
	if err := flags.Parse(args); err != nil {
		return nil, err
	}
	set := map[string]bool{}
	flags.Visit(func(f *flag.Flag) { set[f.Name] = true })

	if cfg.quick {
		if !set["rounds"] {
			cfg.rounds = 1
		}
		if !set["size"] {
			*size = "128MiB"
		}
		if !set["duration"] {
			cfg.duration = time.Second
		}
		if !set["layer-size"] {
			*layerSize = "4MiB"
		}
	}
	var err error
	if cfg.size, err = parseSize(*size); err != nil {
		return nil, err
	}
	cfg.parallelSize = cfg.size / 4
	if *parallelSize != "" {
		if cfg.parallelSize, err = parseSize(*parallelSize); err != nil {
			return nil, err
		}
	}
	cfg.memorySize = cfg.size
	if *memorySize != "" {
		if cfg.memorySize, err = parseSize(*memorySize); err != nil {
			return nil, err
		}
	}
	if cfg.layerSize, err = parseSize(*layerSize); err != nil {
		return nil, err
	}
	if cfg.rounds < 1 {
		return nil, fmt.Errorf("invalid -rounds %d; want 1 or more", cfg.rounds)
	}
	if cfg.caddy.stockBinary == "" {
		return nil, errors.New("missing -caddy: build one with 'go build -o /tmp/caddy ./cmd/caddy' at the repository root, or use bench/run.sh")
	}
	if cfg.caddy.moduleBinary == "" {
		cfg.caddy.moduleBinary = cfg.caddy.stockBinary
	}
	cfg.contenders = splitList(*contenders, ",")
	if cfg.caddy.candidateBinary != "" && !slices.Contains(cfg.contenders, contenderCandidate) {
		cfg.contenders = append(cfg.contenders, contenderCandidate)
	}
	if slices.Contains(cfg.contenders, contenderCandidate) && cfg.caddy.candidateBinary == "" {
		return nil, errors.New("the candidate contender needs -candidate-caddy")
	}
	for _, name := range cfg.contenders {
		if !slices.Contains(allContenders, name) {
			return nil, fmt.Errorf("unknown contender %q in -contenders; want some of %s", name, strings.Join(allContenders, ","))
		}
	}
	cfg.workloads = splitList(*workloads, ",")
	cfg.protos = splitList(*protos, ",")
	for _, p := range cfg.protos {
		if p != "h1" && p != "h2" {
			return nil, fmt.Errorf("unknown protocol %q in -protos; want h1, h2 or both", p)
		}
	}
	cfg.caddy.env = splitList(*caddyEnv, ",")
	cfg.caddy.candidateEnv = splitList(*candidateEnv, ",")
	cfg.caddy.globalOptions = splitList(*globalOptions, ";")
	cfg.caddy.candidateGlobalOptions = splitList(*candidateGlobalOptions, ";")
	cfg.caddy.serverOptions = splitList(*serverOptions, ";")
	return cfg, nil
}

// workload is one row of the results.
type workload struct {
	// ID names the workload in files and in -workloads.
	ID    string `json:"id"`
	Label string `json:"label"`
	// Registry sends it to the registry instead of the fast upstream.
	Registry bool `json:"registry"`
	// PerRequest reports requests per second and CPU per 1000 requests;
	// otherwise MiB/s and CPU per GiB.
	PerRequest bool `json:"per_request"`
	// Memory marks the memory phase, which runs once, after the rounds.
	Memory bool `json:"memory"`

	spec clientSpec
}

func (cfg *runConfig) allWorkloads() []workload {
	blob := func(id, label, kind string, size int64, parallel int) workload {
		return workload{ID: id, Label: label, spec: clientSpec{Workload: kind, Size: size, Parallel: parallel}}
	}
	manifest := func(kind, method string, concurrency int) workload {
		return workload{
			ID:         fmt.Sprintf("%s-c%d", kind, concurrency),
			Label:      fmt.Sprintf("manifest %s c=%d", method, concurrency),
			Registry:   true,
			PerRequest: true,
			spec: clientSpec{
				Workload: kind, Concurrency: concurrency, Duration: cfg.duration,
				ManifestPath: "/v2/" + imageRepository + "/manifests/" + imageTag,
			},
		}
	}
	image := func(kind, label string) workload {
		return workload{ID: kind, Label: label, Registry: true, spec: clientSpec{Workload: kind, Layers: cfg.layers, LayerSize: cfg.layerSize}}
	}

	list := []workload{
		blob("blob-get", "blob GET "+formatSize(cfg.size), workloadBlobGet, cfg.size, 1),
		blob("blob-put", "blob PUT "+formatSize(cfg.size), workloadBlobPut, cfg.size, 1),
		blob("blob-patch", "blob PATCH "+formatSize(cfg.size)+" chunked", workloadBlobPatch, cfg.size, 1),
		blob("blob-get-8x", "8 x blob GET "+formatSize(cfg.parallelSize), workloadBlobGetN, cfg.parallelSize, 8),
	}
	for _, c := range []int{1, 16, 64} {
		list = append(list, manifest(workloadManifestHead, "HEAD", c))
	}
	for _, c := range []int{1, 16, 64} {
		list = append(list, manifest(workloadManifestGet, "GET", c))
	}
	// the same request served from memory: the registry spends more CPU
	// per manifest than any proxy, so only this row shows how many
	// requests per second each proxy can pass
	fast := manifest(workloadManifestGet, "GET", 16)
	fast.ID = "manifest-get-fast-c16"
	fast.Label = "manifest GET c=16, fast upstream"
	fast.Registry = false
	fast.spec.ManifestPath = "/v2/bench/manifest/manifests/latest"
	list = append(list, fast)
	list = append(list,
		image(workloadImagePush, fmt.Sprintf("image push %d x %s", cfg.layers, formatSize(cfg.layerSize))),
		image(workloadImagePull, fmt.Sprintf("image pull %d x %s", cfg.layers, formatSize(cfg.layerSize))),
	)

	if cfg.memory {
		for _, size := range []int64{cfg.memorySize / 10, cfg.memorySize} {
			w := blob("memory-"+formatSize(size), "memory: 4 GET + 4 PATCH x "+formatSize(size), workloadMixed, size, 8)
			w.ID = strings.ToLower(strings.ReplaceAll(w.ID, " ", ""))
			w.Memory = true
			list = append(list, w)
		}
	}

	if len(cfg.workloads) == 0 {
		return list
	}
	var selected []workload
	for _, w := range list {
		for _, prefix := range cfg.workloads {
			if strings.HasPrefix(w.ID, prefix) {
				selected = append(selected, w)
				break
			}
		}
	}
	return selected
}

// measurement is one client run against one contender.
type measurement struct {
	Round     int          `json:"round"`
	Workload  string       `json:"workload"`
	Proto     string       `json:"proto"`
	Contender string       `json:"contender"`
	Result    clientResult `json:"result"`
	// ProxyCPU and UpstreamCPU are user plus system CPU seconds during
	// the measurement; ProxyCPU sums an nginx master and its workers.
	ProxyCPU    float64 `json:"proxy_cpu_s"`
	UpstreamCPU float64 `json:"upstream_cpu_s"`
	// PeakRSS is the proxy's VmHWM, reset before the measurement, in
	// bytes; for nginx the sum over its processes.
	PeakRSS int64 `json:"peak_rss_bytes"`
	// PeakAnon is the largest anonymous resident size (RssAnon: heap,
	// stacks, buffers; without the pages of the binary) seen by sampling
	// every 20 ms, in bytes.
	PeakAnon int64  `json:"peak_anon_bytes"`
	Error    string `json:"error,omitempty"`
}

type roundInfo struct {
	Round       int     `json:"round"`
	LoadBefore  string  `json:"load_before"`
	LoadAfter   string  `json:"load_after"`
	DurationSec float64 `json:"duration_s"`
}

type runner struct {
	cfg        *runConfig
	self       string
	sup        *supervisor
	workDir    string
	runDir     string
	certs      certFiles
	servers    serverSet
	serverProc []*process
	contenders []*contender
	results    []measurement
	rounds     []roundInfo
	// startRSS is the resident size of each proxy after its first start,
	// kept when the memory phase restarts it
	startRSS map[string]int64
	log      io.Writer
}

func runOrchestrator(args []string) error {
	cfg, err := parseRunFlags(args)
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	r := &runner{cfg: cfg, self: self, sup: &supervisor{}, log: os.Stderr, startRSS: map[string]int64{}}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// on Ctrl+C, kill every process group before exiting
	go func() {
		<-ctx.Done()
		r.sup.stopAll()
	}()
	defer r.sup.stopAll()

	err = r.run(ctx)
	if ctx.Err() != nil {
		return fmt.Errorf("interrupted; partial results are in %s", r.runDir)
	}
	return err
}

func (r *runner) run(ctx context.Context) error {
	started := time.Now()
	r.runDir = filepath.Join(r.cfg.outDir, started.UTC().Format("20060102T150405Z"))
	if err := os.MkdirAll(r.runDir, 0o755); err != nil {
		return err
	}
	var err error
	if r.workDir, err = os.MkdirTemp("", "caddy-registry-bench-"); err != nil {
		return err
	}
	if !r.cfg.keep {
		defer os.RemoveAll(r.workDir)
	}
	if r.certs, err = writeCerts(r.workDir); err != nil {
		return err
	}
	r.logf("run directory %s, configurations and server logs in %s", r.runDir, r.workDir)
	r.logf("load averages at start: %s", loadAverages())

	if err := r.startAll(ctx); err != nil {
		return err
	}

	workloads := r.cfg.allWorkloads()
	for round := 1; round <= r.cfg.rounds; round++ {
		info := roundInfo{Round: round, LoadBefore: loadAverages()}
		roundStart := time.Now()
		for i, w := range workloads {
			if w.Memory {
				continue
			}
			if err := r.runWorkload(ctx, w, round, round+i); err != nil {
				return err
			}
		}
		info.LoadAfter = loadAverages()
		info.DurationSec = time.Since(roundStart).Seconds()
		r.rounds = append(r.rounds, info)
		r.logf("round %d done in %s; load averages %s before, %s after", round, time.Since(roundStart).Round(time.Second), info.LoadBefore, info.LoadAfter)
		if err := r.writeResults(started, workloads, false); err != nil {
			return err
		}
	}

	if r.cfg.profile {
		if err := r.takeProfiles(ctx, workloads); err != nil {
			return err
		}
	}

	if slices.ContainsFunc(workloads, func(w workload) bool { return w.Memory }) {
		if err := r.restartProxies(ctx); err != nil {
			return err
		}
		info := roundInfo{Round: 0, LoadBefore: loadAverages()}
		phaseStart := time.Now()
		for i, w := range workloads {
			if w.Memory {
				if err := r.runWorkload(ctx, w, 0, i); err != nil {
					return err
				}
			}
		}
		info.LoadAfter = loadAverages()
		info.DurationSec = time.Since(phaseStart).Seconds()
		r.rounds = append(r.rounds, info)
	}

	if err := r.writeResults(started, workloads, true); err != nil {
		return err
	}
	r.logf("finished in %s; results in %s", time.Since(started).Round(time.Second), r.runDir)
	return nil
}

// startAll starts the servers and every proxy contender, all of which run
// until the end of the run.
func (r *runner) startAll(ctx context.Context) error {
	var err error
	r.servers, r.serverProc, err = startServers(ctx, r.sup, r.self, r.workDir, r.certs, r.cfg.layers, r.cfg.layerSize)
	if err != nil {
		return err
	}
	for _, name := range r.cfg.contenders {
		c, err := r.startContender(ctx, name)
		if err != nil {
			return err
		}
		r.contenders = append(r.contenders, c)
	}
	return nil
}

func (r *runner) startContender(ctx context.Context, name string) (*contender, error) {
	var (
		c   *contender
		err error
	)
	switch name {
	case contenderDirect:
		return r.servers.directContenders()[0], nil
	case contenderDirectTLS:
		return r.servers.directContenders()[1], nil
	case contenderNginx, contenderNginxTuned:
		c, err = startNginx(ctx, r.sup, r.cfg.nginxPath, r.workDir, name, name == contenderNginxTuned, r.certs, r.servers)
	default:
		c, err = startCaddy(ctx, r.sup, r.cfg.caddy, r.workDir, name, r.certs, r.servers)
	}
	if err != nil {
		return nil, fmt.Errorf("starting %s: %v", name, err)
	}
	r.logf("%s started, %d process(es), resident %.1f MiB", name, len(c.pids()), float64(c.startRSS)/(1<<20))
	if _, ok := r.startRSS[name]; !ok {
		r.startRSS[name] = c.startRSS
	}
	return c, nil
}

// restartProxies replaces every proxy process with a fresh one, so that
// the memory phase measures only its own transfers and not what the
// manifest workloads left behind (connections, goroutine stacks, heap that the Go
// runtime has not returned yet). The split module configuration takes no
// part in the memory phase: it runs the same code as the module.
func (r *runner) restartProxies(ctx context.Context) error {
	var kept []*contender
	for _, c := range r.contenders {
		if c.proc == nil {
			kept = append(kept, c)
			continue
		}
		r.sup.stop(c.proc)
		if c.name == contenderModuleSplit {
			continue
		}
		fresh, err := r.startContender(ctx, c.name)
		if err != nil {
			return err
		}
		kept = append(kept, fresh)
	}
	r.contenders = kept
	return nil
}

// runWorkload measures every contender once per protocol, in an order
// rotated by shift so that no contender always runs first or last.
func (r *runner) runWorkload(ctx context.Context, w workload, round, shift int) error {
	for _, proto := range r.cfg.protos {
		var order []*contender
		for _, c := range r.contenders {
			if proto == "h2" && !c.h2 {
				continue
			}
			if w.Memory && c.proc == nil {
				continue
			}
			order = append(order, c)
		}
		if len(order) == 0 {
			continue
		}
		k := shift % len(order)
		order = append(order[k:], order[:k]...)
		for _, c := range order {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			m, err := r.measure(ctx, c, w, proto, round)
			if err != nil {
				return err
			}
			r.results = append(r.results, m)
			r.logf("%-3s %-22s %-5s %-12s %s", roundLabel(round), w.ID, proto, c.name, describe(w, m))
		}
	}
	return nil
}

func roundLabel(round int) string {
	if round == 0 {
		return "mem"
	}
	return "r" + strconv.Itoa(round)
}

// measure runs one client process against c and reads the proxy's CPU
// time and peak memory around the measurement.
func (r *runner) measure(ctx context.Context, c *contender, w workload, proto string, round int) (measurement, error) {
	m := measurement{Round: round, Workload: w.ID, Proto: proto, Contender: c.name}
	spec := w.spec
	spec.Proto = proto
	spec.CA = r.certs.CA
	spec.BaseURL = c.blobURL
	if w.Registry {
		spec.BaseURL = c.registryURL
	}
	if spec.Workload == workloadImagePush {
		spec.PushRepo = fmt.Sprintf("bench/push-%s-%s-r%d", c.name, proto, round)
	}
	specJSON, err := json.Marshal(spec)
	if err != nil {
		return m, err
	}

	client, err := r.sup.start("client", filepath.Join(r.workDir, "client.log"), exec.Command(r.self, "client", "-spec", string(specJSON)))
	if err != nil {
		return m, err
	}
	defer r.sup.stop(client)
	if line, err := client.readLine(5 * time.Minute); err != nil || line != "ready" {
		m.Error = fmt.Sprintf("client did not get ready: %v %q", err, line)
		return m, nil
	}

	pids := c.pids()
	upstreamPid := r.serverProc[0].pid()
	if w.Registry {
		upstreamPid = r.serverProc[1].pid()
	}
	if err := resetPeakRSS(pids); err != nil {
		return m, fmt.Errorf("resetting the peak RSS of %s: %v", c.name, err)
	}
	proxyBefore, err := cpuSeconds(pids)
	if err != nil {
		return m, err
	}
	upstreamBefore, err := cpuSeconds([]int{upstreamPid})
	if err != nil {
		return m, err
	}

	if _, err := io.WriteString(client.stdin, "go\n"); err != nil {
		return m, err
	}
	stopSampling := sampleAnon(pids, &m.PeakAnon)
	line, err := client.readLine(15 * time.Minute)
	stopSampling()
	client.stdin.Close()
	if err != nil {
		m.Error = err.Error()
		return m, nil
	}

	proxyAfter, err := cpuSeconds(pids)
	if err != nil {
		return m, fmt.Errorf("%s is gone: %v", c.name, err)
	}
	upstreamAfter, _ := cpuSeconds([]int{upstreamPid})
	m.ProxyCPU = proxyAfter - proxyBefore
	m.UpstreamCPU = upstreamAfter - upstreamBefore
	if m.PeakRSS, err = memoryStatus(pids, "VmHWM"); err != nil {
		return m, err
	}
	if err := json.Unmarshal([]byte(line), &m.Result); err != nil {
		return m, fmt.Errorf("client printed %q: %v", line, err)
	}
	if m.Result.Errors > 0 {
		m.Error = fmt.Sprintf("%d failed requests, first: %s", m.Result.Errors, m.Result.FirstError)
	}
	return m, nil
}

// sampleAnon records the largest summed RssAnon of pids into peak until
// the returned function is called.
func sampleAnon(pids []int, peak *int64) (stop func()) {
	if len(pids) == 0 {
		return func() {}
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		ticker := time.NewTicker(20 * time.Millisecond)
		defer ticker.Stop()
		for {
			if anon, err := memoryStatus(pids, "RssAnon"); err == nil && anon > *peak {
				*peak = anon
			}
			select {
			case <-done:
				return
			case <-ticker.C:
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}

// throughput returns MiB/s or requests/s.
func (m measurement) throughput(perRequest bool) float64 {
	if m.Result.Seconds <= 0 {
		return 0
	}
	if perRequest {
		return float64(m.Result.Requests) / m.Result.Seconds
	}
	return float64(m.Result.Bytes) / (1 << 20) / m.Result.Seconds
}

// cpuPerUnit returns proxy CPU seconds per GiB, or per 1000 requests.
func (m measurement) cpuPerUnit(perRequest bool) float64 {
	if perRequest {
		if m.Result.Requests == 0 {
			return 0
		}
		return m.ProxyCPU / float64(m.Result.Requests) * 1000
	}
	if m.Result.Bytes == 0 {
		return 0
	}
	return m.ProxyCPU / (float64(m.Result.Bytes) / (1 << 30))
}

func describe(w workload, m measurement) string {
	if m.Error != "" {
		return "FAILED: " + m.Error
	}
	s := fmt.Sprintf("%s %s  cpu %.2f s  peak %.1f MiB (anon %.1f)  %s %s", formatFloat(m.throughput(w.PerRequest)), unit(w),
		m.ProxyCPU, float64(m.PeakRSS)/(1<<20), float64(m.PeakAnon)/(1<<20), m.Result.Protocol, m.Result.TLS)
	if w.PerRequest {
		s += fmt.Sprintf("  p50 %.0f µs  p99 %.0f µs", m.Result.P50, m.Result.P99)
	}
	return s
}

func unit(w workload) string {
	if w.PerRequest {
		return "req/s"
	}
	return "MiB/s"
}

func (r *runner) logf(format string, args ...any) {
	fmt.Fprintf(r.log, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// takeProfiles runs the blob workloads and two manifest GETs (from the
// fast upstream at concurrency 16, and from the registry at concurrency
// 1) once more against each Caddy contender while its admin endpoint
// records a CPU profile and the allocations of that time, then takes a
// heap profile. Manifest runs
// last at least profileDuration, so that the profiles hold enough
// samples.
func (r *runner) takeProfiles(ctx context.Context, workloads []workload) error {
	dir := filepath.Join(r.runDir, "profiles")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, w := range workloads {
		profiled := w.ID == "manifest-get-fast-c16" || w.ID == "manifest-get-c1" || strings.HasPrefix(w.ID, "blob-")
		if !profiled {
			continue
		}
		if w.PerRequest {
			w.spec.Duration = max(w.spec.Duration, profileDuration)
		}
		for _, proto := range r.cfg.protos {
			for _, c := range r.contenders {
				if c.adminAddr == "" {
					continue
				}
				seconds := 2
				if w.PerRequest {
					seconds = max(1, int(w.spec.Duration.Seconds())-1)
				}
				base := filepath.Join(dir, fmt.Sprintf("%s-%s-%s", w.ID, proto, c.name))
				done := make(chan error, 2)
				go func() { done <- fetchProfile(ctx, c.adminAddr, "profile", seconds, base+".cpu.pprof") }()
				go func() { done <- fetchProfile(ctx, c.adminAddr, "allocs", seconds, base+".allocs.pprof") }()
				// the profiles start at once; give them a moment to begin
				time.Sleep(100 * time.Millisecond)
				m, err := r.measure(ctx, c, w, proto, -1)
				if err != nil {
					return err
				}
				for range 2 {
					if err := <-done; err != nil {
						return err
					}
				}
				// the live heap right after the workload, to compare what
				// stays allocated
				if err := fetchProfile(ctx, c.adminAddr, "heap", 0, base+".heap.pprof"); err != nil {
					return err
				}
				r.logf("profile %-22s %-5s %-12s %s", w.ID, proto, c.name, describe(w, m))
			}
		}
	}
	return nil
}

const profileDuration = 6 * time.Second

func fetchProfile(ctx context.Context, adminAddr, kind string, seconds int, path string) error {
	url := fmt.Sprintf("http://%s/debug/pprof/%s", adminAddr, kind)
	if seconds > 0 {
		url += "?seconds=" + strconv.Itoa(seconds)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("fetching %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("fetching %s: status %d", url, resp.StatusCode)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func splitList(s, sep string) []string {
	var list []string
	for _, item := range strings.Split(s, sep) {
		if item = strings.TrimSpace(item); item != "" {
			list = append(list, item)
		}
	}
	return list
}

// parseSize reads sizes such as "1GiB", "256MiB", "64KiB" or a number of
// bytes.
func parseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		factor int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}
	for _, u := range units {
		if number, ok := strings.CutSuffix(s, u.suffix); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(number), 10, 64)
			if err != nil || n <= 0 {
				return 0, fmt.Errorf("invalid size %q; want a positive number with GiB, MiB, KiB or B", s)
			}
			return n * u.factor, nil
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("invalid size %q; want a positive number with GiB, MiB, KiB or B", s)
	}
	return n, nil
}

func formatSize(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%d KiB", n>>10)
}

func formatFloat(v float64) string {
	switch {
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}
