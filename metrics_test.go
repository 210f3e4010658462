package dockerregistry

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// metricSamples maps a series, written as name{label="value",...} with the
// labels sorted, to its value. A histogram contributes its _count and _sum.
type metricSamples map[string]float64

// seriesKey writes a series the way metricSamples keys it.
func seriesKey(name string, labels ...string) string {
	if len(labels)%2 != 0 {
		panic("seriesKey: labels must be name/value pairs")
	}
	var pairs []string
	for i := 0; i < len(labels); i += 2 {
		pairs = append(pairs, fmt.Sprintf("%s=%q", labels[i], labels[i+1]))
	}
	sort.Strings(pairs)
	return name + "{" + strings.Join(pairs, ",") + "}"
}

// scrapeMetrics fetches a Prometheus text exposition and returns the
// families by name. It fails the test if a family or a series appears
// twice.
func scrapeMetrics(t *testing.T, c *http.Client, url string) map[string]*dto.MetricFamily {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := doAcrossReload(c, req)
	if err != nil {
		t.Fatalf("scraping %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scraping %s: status %d: %s", url, resp.StatusCode, body)
	}

	// the parser merges nothing: a second TYPE line for a name is an error
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parsing the exposition of %s: %v", url, err)
	}
	for name, family := range families {
		seen := map[string]bool{}
		for _, m := range family.GetMetric() {
			key := seriesKey(name, labelPairs(m)...)
			if seen[key] {
				t.Errorf("series %s appears twice", key)
			}
			seen[key] = true
		}
	}
	return families
}

func labelPairs(m *dto.Metric) []string {
	var labels []string
	for _, l := range m.GetLabel() {
		labels = append(labels, l.GetName(), l.GetValue())
	}
	return labels
}

// moduleSamples returns the values of the module's series.
func moduleSamples(families map[string]*dto.MetricFamily) metricSamples {
	samples := metricSamples{}
	for name, family := range families {
		if !strings.HasPrefix(name, "caddy_docker_registry_") {
			continue
		}
		for _, m := range family.GetMetric() {
			labels := labelPairs(m)
			switch {
			case m.GetCounter() != nil:
				samples[seriesKey(name, labels...)] = m.GetCounter().GetValue()
			case m.GetHistogram() != nil:
				samples[seriesKey(name+"_count", labels...)] = float64(m.GetHistogram().GetSampleCount())
				samples[seriesKey(name+"_sum", labels...)] = m.GetHistogram().GetSampleSum()
			}
		}
	}
	return samples
}

// checkDeltas compares after minus before with want for every series;
// series missing from want must not have changed. Histogram sums are
// only checked to have grown where their count grew.
func checkDeltas(t *testing.T, before, after metricSamples, want map[string]float64) {
	t.Helper()
	for key, value := range after {
		delta := value - before[key]
		if strings.Contains(key, "_sum{") {
			countKey := strings.Replace(key, "_sum{", "_count{", 1)
			if after[countKey] > before[countKey] && delta <= 0 {
				t.Errorf("%s: got a change of %v, want a positive one", key, delta)
			}
			continue
		}
		if delta != want[key] {
			t.Errorf("%s: got a change of %v, want %v", key, delta, want[key])
		}
	}
	for key := range want {
		if _, ok := after[key]; !ok {
			t.Errorf("%s: missing from the exposition", key)
		}
	}
}

func requestsKey(operation, target, code string) string {
	return seriesKey("caddy_docker_registry_requests_total", "operation", operation, "target", target, "code", code)
}

func requestBytesKey(operation, target string) string {
	return seriesKey("caddy_docker_registry_request_body_bytes_total", "operation", operation, "target", target)
}

func responseBytesKey(operation, target string) string {
	return seriesKey("caddy_docker_registry_response_body_bytes_total", "operation", operation, "target", target)
}

func uploadCountKey(method string) string {
	return seriesKey("caddy_docker_registry_upload_request_duration_seconds_count", "method", method)
}

func rejectionsKey(reason string) string {
	return seriesKey("caddy_docker_registry_rejections_total", "reason", reason)
}

// Bodies that the metrics tests' upstreams send, of known length.
var (
	metricsManifestBody = []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}`)
	metricsNotFoundBody = []byte(`{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}`)
	metricsBlobBody     = bytes.Repeat([]byte("layer-data"), 10000)
)

// metricsPullUpstream responds to reads like a registry holding one image.
func metricsPullUpstream(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/v2/":
		_, _ = w.Write([]byte("{}"))
	case strings.HasSuffix(r.URL.Path, "/manifests/1.0"):
		_, _ = w.Write(metricsManifestBody)
	case strings.Contains(r.URL.Path, "/manifests/"):
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write(metricsNotFoundBody)
	case strings.Contains(r.URL.Path, "/blobs/"):
		_, _ = w.Write(metricsBlobBody)
	default:
		w.WriteHeader(http.StatusNotFound)
	}
}

// metricsPushUpstream responds to an upload session and a manifest push
// with empty bodies.
func metricsPushUpstream(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodHead:
		w.Header().Set("Content-Length", strconv.Itoa(len(metricsBlobBody)))
	case r.Method == http.MethodPost:
		w.Header().Set("Location", "/v2/team/app/blobs/uploads/"+testUpload)
		w.WriteHeader(http.StatusAccepted)
	case r.Method == http.MethodPatch:
		w.WriteHeader(http.StatusAccepted)
	case r.Method == http.MethodPut:
		w.WriteHeader(http.StatusCreated)
	}
}

// chunkedBody hides the length of a reader, so that the client sends it
// with chunked transfer encoding.
type chunkedBody struct{ io.Reader }

func TestMetricsCountRequestsBytesAndRejections(t *testing.T) {
	pull := newUpstream(t, "pull", metricsPullUpstream)
	push := newUpstream(t, "push", metricsPushUpstream)
	tc := startCaddy(t, map[string]any{
		"handler":            "docker_registry",
		"pull":               proxyTo(pull.dial()),
		"push":               proxyTo(push.dial()),
		"reject_user_agents": []string{"^evil-scanner/"},
	}, caddyOptions{next: []map[string]any{{"handler": "metrics"}}})
	c := tc.client(false)
	metricsURL := tc.url("mydocker", "/metrics")

	families := scrapeMetrics(t, c, metricsURL)
	before := moduleSamples(families)
	if _, ok := families["caddy_config_last_reload_successful"]; !ok {
		t.Error("Caddy's own caddy_config_last_reload_successful is missing from the exposition")
	}

	send := func(method, path string, body io.Reader, header http.Header, wantStatus int) {
		t.Helper()
		resp := do(t, c, method, tc.url("mydocker", path), body, header)
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			t.Fatalf("%s %s: reading the body: %v", method, path, err)
		}
		if resp.StatusCode != wantStatus {
			t.Errorf("%s %s: got status %d, want %d", method, path, resp.StatusCode, wantStatus)
		}
	}
	blob := "/v2/team/app/blobs/" + testDigest
	upload := "/v2/team/app/blobs/uploads/" + testUpload

	// routed to the pull target
	send(http.MethodGet, "/v2/", nil, nil, 200)
	send(http.MethodGet, "/v2/team/app/manifests/1.0", nil, nil, 200)
	send(http.MethodGet, "/v2/team/app/manifests/1.0", nil, nil, 200)
	send(http.MethodGet, "/v2/team/app/manifests/missing", nil, nil, 404)
	send(http.MethodGet, blob, nil, nil, 200)

	// routed to the push target, an upload in three requests
	send(http.MethodHead, blob, nil, nil, 200)
	send(http.MethodPost, "/v2/team/app/blobs/uploads/", nil, nil, 202)
	send(http.MethodPatch, upload, chunkedBody{bytes.NewReader(make([]byte, 70000))}, nil, 202)
	send(http.MethodPut, upload+"?digest="+testDigest, bytes.NewReader(make([]byte, 10)), nil, 201)
	send(http.MethodPut, "/v2/team/app/manifests/1.0", bytes.NewReader(metricsManifestBody), nil, 201)

	// rejected by the module
	send(http.MethodGet, "/v2/", nil, http.Header{"User-Agent": {"docker/1.4.1"}}, 404)
	send(http.MethodGet, "/v2/", nil, http.Header{"User-Agent": {"evil-scanner/2.0"}}, 404)
	send(http.MethodGet, "/v2/team/../x/manifests/latest", nil, nil, 400)
	send(http.MethodGet, "/v2/Bad/manifests/latest", nil, nil, 400)
	send(http.MethodGet, "/v2/team/app/nowhere", nil, nil, 404)
	send("TRACE", "/v2/", nil, nil, 405)
	send(http.MethodGet, "/v1/_ping", nil, nil, 404)

	after := moduleSamples(scrapeMetrics(t, c, metricsURL))
	checkDeltas(t, before, after, map[string]float64{
		requestsKey("ping", "pull", "2xx"):       1,
		requestsKey("manifest", "pull", "2xx"):   2,
		requestsKey("manifest", "pull", "4xx"):   1,
		requestsKey("blob", "pull", "2xx"):       1,
		requestsKey("blob", "push", "2xx"):       1,
		requestsKey("upload", "push", "2xx"):     3,
		requestsKey("manifest", "push", "2xx"):   1,
		requestsKey("invalid", "module", "4xx"):  6,
		requestsKey("manifest", "module", "4xx"): 1,

		requestBytesKey("upload", "push"):   70010,
		requestBytesKey("manifest", "push"): float64(len(metricsManifestBody)),

		responseBytesKey("ping", "pull"):     2,
		responseBytesKey("manifest", "pull"): float64(2*len(metricsManifestBody) + len(metricsNotFoundBody)),
		responseBytesKey("blob", "pull"):     float64(len(metricsBlobBody)),

		uploadCountKey("POST"):  1,
		uploadCountKey("PATCH"): 1,
		uploadCountKey("PUT"):   1,

		rejectionsKey("old_client"):       1,
		rejectionsKey("user_agent"):       1,
		rejectionsKey("invalid_path"):     2,
		rejectionsKey("unknown_endpoint"): 2,
		rejectionsKey("method"):           1,
		rejectionsKey("read_only"):        0,
	})

	// the upstreams saw the bodies whole, so counting did not consume them
	if got := push.received()[2].BodyLength; got != 70000 {
		t.Errorf("PATCH body at the push upstream: got %d bytes, want 70000", got)
	}
}

func TestMetricLabelValuesAreBounded(t *testing.T) {
	pull := newUpstream(t, "pull", metricsPullUpstream)
	tc := startCaddy(t, map[string]any{"handler": "docker_registry", "pull": proxyTo(pull.dial())},
		caddyOptions{next: []map[string]any{{"handler": "metrics"}}})
	c := tc.client(true)

	for i := range 30 {
		resp := do(t, c, http.MethodGet, tc.url("mydocker", fmt.Sprintf("/v2/team/app-%d/manifests/tag-%d", i, i)), nil, nil)
		_, _ = io.Copy(io.Discard, resp.Body)
	}

	allowed := map[string][]string{
		"operation": metricOperations[:],
		"target":    metricTargets[:],
		"code":      metricCodes[:],
		"method":    uploadMethods[:],
		"reason":    rejectionReasonNames[reasonUnset+1:],
	}
	families := scrapeMetrics(t, c, tc.url("mydocker", "/metrics"))
	wantSeries := map[string]int{
		"caddy_docker_registry_requests_total":                  len(metricOperations) * len(metricTargets) * len(metricCodes),
		"caddy_docker_registry_request_body_bytes_total":        len(metricOperations) * 2,
		"caddy_docker_registry_response_body_bytes_total":       len(metricOperations) * 2,
		"caddy_docker_registry_upload_request_duration_seconds": len(uploadMethods),
		"caddy_docker_registry_rejections_total":                int(reasonCount) - 1,
	}
	for name, want := range wantSeries {
		family, ok := families[name]
		if !ok {
			t.Errorf("%s: missing from the exposition", name)
			continue
		}
		if got := len(family.GetMetric()); got != want {
			t.Errorf("%s: got %d series, want %d", name, got, want)
		}
		for _, m := range family.GetMetric() {
			for _, l := range m.GetLabel() {
				values, known := allowed[l.GetName()]
				if !known {
					t.Errorf("%s: unexpected label %s", name, l.GetName())
					continue
				}
				if !containsString(values, l.GetValue()) {
					t.Errorf("%s: label %s has the value %q, want one of %q", name, l.GetName(), l.GetValue(), values)
				}
			}
		}
	}
}

func TestMetricsSurviveConfigReloads(t *testing.T) {
	pull := newUpstream(t, "pull", metricsPullUpstream)
	push := newUpstream(t, "push", metricsPushUpstream)
	admin := startAdminCaddy(t)
	registryPort, secondPort := freePort(t), freePort(t)
	unreachable := freePort(t) // nothing listens here after freePort returns

	// two docker_registry handlers in two servers register their metrics
	// in the same registry. The second config makes the first read-only
	// and sends its reads to a closed port.
	config := func(readOnly bool) map[string]any {
		first := map[string]any{"handler": "docker_registry", "pull": proxyTo(pull.dial()), "push": proxyTo(push.dial())}
		if readOnly {
			first = map[string]any{"handler": "docker_registry", "pull": proxyTo("127.0.0.1:" + unreachable), "read_only": true}
		}
		second := map[string]any{"handler": "docker_registry", "pull": proxyTo(pull.dial())}
		return plainHTTPConfig(admin, map[string][]map[string]any{
			registryPort: {first},
			secondPort:   {second},
		})
	}
	c := &http.Client{Timeout: 10 * time.Second}
	registry := "http://127.0.0.1:" + registryPort
	send := func(method, url string, wantStatus int) {
		t.Helper()
		req, err := http.NewRequest(method, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := doAcrossReload(c, req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, url, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != wantStatus {
			t.Errorf("%s %s: got status %d, want %d", method, url, resp.StatusCode, wantStatus)
		}
	}

	// a reload closes idle keep-alive connections of the old servers, and
	// a request racing with that close fails with EOF, so start afresh
	reload := func(readOnly bool) {
		t.Helper()
		admin.load(t, config(readOnly))
		c.CloseIdleConnections()
	}

	reload(false)
	before := moduleSamples(scrapeMetrics(t, c, admin.url("/metrics")))
	send(http.MethodGet, registry+"/v2/team/app/manifests/1.0", 200)
	send(http.MethodGet, "http://127.0.0.1:"+secondPort+"/v2/team/app/manifests/1.0", 200)

	// an upload request in flight during a reload finishes on the old
	// configuration, and its body is counted while it streams
	patched := finishUploadAcrossReload(t, admin, registry, before, func() error { return admin.post(config(true)) })
	c.CloseIdleConnections()
	send(http.MethodGet, registry+"/v2/team/app/manifests/1.0", 502)
	send(http.MethodPut, registry+"/v2/team/app/manifests/1.0", 405)

	reload(false)
	send(http.MethodGet, registry+"/v2/team/app/manifests/1.0", 200)

	families := scrapeMetrics(t, c, admin.url("/metrics"))
	if _, ok := families["caddy_config_last_reload_successful"]; !ok {
		t.Error("Caddy's own caddy_config_last_reload_successful is missing from the admin exposition")
	}
	checkDeltas(t, before, moduleSamples(families), map[string]float64{
		requestsKey("manifest", "pull", "2xx"):   3,
		requestsKey("manifest", "pull", "5xx"):   1,
		requestsKey("manifest", "push", "2xx"):   float64(patched.oldConfigProbes),
		requestsKey("manifest", "module", "4xx"): float64(1 + patched.newConfigProbes),
		requestsKey("upload", "push", "2xx"):     1,
		requestBytesKey("upload", "push"):        70000,
		uploadCountKey("PATCH"):                  1,
		responseBytesKey("manifest", "pull"):     float64(3*len(metricsManifestBody)) + float64(len(`{"errors":[{"code":"UNAVAILABLE","message":"the upstream registry is unreachable"}]}`)),
		rejectionsKey("read_only"):               float64(1 + patched.newConfigProbes),
	})
}

// doAcrossReload sends a request without a body and sends it once more if
// it failed without a timeout, such as when the connection was closed
// before a response came (EOF, a reset, "server closed idle connection"). Right after a config
// load, a new connection can still be accepted by the server that the load
// replaced. That server closes it as idle without reading the request, so
// the first attempt was not handled and the retry counts once.
func doAcrossReload(c *http.Client, req *http.Request) (*http.Response, error) {
	resp, err := c.Do(req)
	var netErr net.Error
	if err == nil || (errors.As(err, &netErr) && netErr.Timeout()) {
		return resp, err
	}
	c.CloseIdleConnections()
	return c.Do(req)
}

// adminCaddy is a Caddy instance configured through its admin API on a
// loopback port.
type adminCaddy struct {
	port    string
	storage string // directory of the file_system storage
}

func (a adminCaddy) url(path string) string { return "http://127.0.0.1:" + a.port + path }

// startAdminCaddy starts Caddy with only its admin API, as "caddy run"
// does, and stops both when the test ends.
func startAdminCaddy(t *testing.T) adminCaddy {
	t.Helper()
	a := adminCaddy{port: freePort(t), storage: tempDir(t)}
	if err := caddyLoadJSON(map[string]any{"admin": a.adminConfig(), "logging": discardLogs}); err != nil {
		t.Fatalf("starting caddy: %v", err)
	}
	t.Cleanup(func() {
		// a config without an admin API stops the admin server, in the
		// background, so wait until its port refuses connections
		if err := caddyLoadJSON(map[string]any{"admin": map[string]any{"disabled": true, "config": map[string]any{"persist": false}}, "logging": discardLogs}); err != nil {
			t.Errorf("stopping the admin API: %v", err)
		}
		if err := caddy.Stop(); err != nil {
			t.Errorf("stopping caddy: %v", err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			conn, err := net.Dial("tcp", "127.0.0.1:"+a.port)
			if err != nil {
				return
			}
			conn.Close()
			if time.Now().After(deadline) {
				t.Errorf("the admin API on port %s still accepts connections", a.port)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	return a
}

// caddyLoadJSON loads cfg into the running Caddy.
func caddyLoadJSON(cfg map[string]any) error {
	body, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	return caddy.Load(body, true)
}

// load sends cfg to the admin API's /load endpoint.
func (a adminCaddy) load(t *testing.T, cfg map[string]any) {
	t.Helper()
	if err := a.post(cfg); err != nil {
		t.Fatal(err)
	}
}

// post sends cfg to the admin API's /load endpoint and returns an error
// unless the status is 200. It returns once Caddy stopped the old
// servers, which wait for the requests in flight.
func (a adminCaddy) post(cfg map[string]any) error {
	body, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	resp, err := http.Post(a.url("/load"), "application/json", bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("POST /load: %v", err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST /load: got status %d (%s), want 200", resp.StatusCode, msg)
	}
	return nil
}

// reloadProbes counts the probe requests of finishUploadAcrossReload by
// the configuration that handled them.
type reloadProbes struct{ oldConfigProbes, newConfigProbes int }

// finishUploadAcrossReload sends a PATCH of 70000 bytes to an upload
// session at registry and runs reload while the body is half sent. It
// sends manifest PUTs on new connections until one gets 405, which shows
// that the new, read-only configuration is serving, then sends the rest
// of the body and checks that the PATCH completes with 202. before are
// the samples at the start of the test.
func finishUploadAcrossReload(t *testing.T, admin adminCaddy, registry string, before metricSamples, reload func() error) reloadProbes {
	t.Helper()
	client := &http.Client{Timeout: 30 * time.Second}
	body, bodyWriter := io.Pipe()
	patched := make(chan error, 1)
	go func() {
		req, err := http.NewRequest(http.MethodPatch, registry+"/v2/team/app/blobs/uploads/"+testUpload, body)
		if err != nil {
			patched <- err
			return
		}
		resp, err := client.Do(req)
		if err != nil {
			patched <- err
			return
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			patched <- fmt.Errorf("got status %d, want 202", resp.StatusCode)
			return
		}
		patched <- nil
	}()
	defer bodyWriter.Close()

	// the first half must have passed the module before the reload
	if _, err := bodyWriter.Write(make([]byte, 35000)); err != nil {
		t.Fatalf("writing the first half of the PATCH body: %v", err)
	}
	key := requestBytesKey("upload", "push")
	deadline := time.Now().Add(10 * time.Second)
	for moduleSamples(scrapeMetrics(t, client, admin.url("/metrics")))[key]-before[key] < 35000 {
		if time.Now().After(deadline) {
			t.Fatal("the first half of the PATCH body was not counted within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}

	reloaded := make(chan error, 1)
	go func() { reloaded <- reload() }()

	var probes reloadProbes
	probe := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline = time.Now().Add(30 * time.Second)
	for probes.newConfigProbes == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the new configuration did not serve within 30s")
		}
		req, err := http.NewRequest(http.MethodPut, registry+"/v2/team/app/manifests/1.0", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := probe.Do(req)
		if err != nil {
			// a connection that the old server accepted and closed while
			// stopping; it carried no request
			time.Sleep(10 * time.Millisecond)
			continue
		}
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusCreated:
			probes.oldConfigProbes++
			time.Sleep(10 * time.Millisecond)
		case http.StatusMethodNotAllowed:
			probes.newConfigProbes++
		default:
			t.Fatalf("probe PUT: got status %d, want 201 or 405", resp.StatusCode)
		}
	}

	if _, err := bodyWriter.Write(make([]byte, 35000)); err != nil {
		t.Fatalf("writing the second half of the PATCH body: %v", err)
	}
	bodyWriter.Close()
	if err := <-patched; err != nil {
		t.Errorf("PATCH across the reload: %v", err)
	}
	if err := <-reloaded; err != nil {
		t.Errorf("reload: %v", err)
	}
	return probes
}

// plainHTTPConfig returns a config with the admin API of a and one plain
// HTTP server on 127.0.0.1 per port, each running its handlers.
func plainHTTPConfig(a adminCaddy, handlersByPort map[string][]map[string]any) map[string]any {
	servers := map[string]any{}
	for port, handlers := range handlersByPort {
		servers["srv"+port] = map[string]any{
			"listen":          []string{"127.0.0.1:" + port},
			"routes":          []any{map[string]any{"handle": handlers}},
			"automatic_https": map[string]any{"disable": true},
		}
	}
	return map[string]any{
		"admin":   a.adminConfig(),
		"storage": map[string]any{"module": "file_system", "root": a.storage},
		"logging": discardLogs,
		"apps":    map[string]any{"http": map[string]any{"servers": servers}},
	}
}

// adminConfig listens on the loopback port and keeps loaded configs out
// of Caddy's autosave file in the user's home directory.
func (a adminCaddy) adminConfig() map[string]any {
	return map[string]any{"listen": "127.0.0.1:" + a.port, "config": map[string]any{"persist": false}}
}

// discardLogs is the logging config of tests that read no logs.
var discardLogs = map[string]any{"logs": map[string]any{"default": map[string]any{
	"level": "ERROR", "writer": map[string]any{"output": "discard"}}}}

func TestRejectionReasonOfEachRejection(t *testing.T) {
	ctx, cancel := newTestContext(t)
	defer cancel()
	provision := func(readOnly bool) *Handler {
		h := &Handler{
			Pull:             &Target{ProxyRaw: []byte(`{"handler":"reverse_proxy","upstreams":[{"dial":"127.0.0.1:9"}]}`)},
			ReadOnly:         readOnly,
			RejectUserAgents: []string{"^evil-scanner/"},
		}
		if err := h.Provision(ctx); err != nil {
			t.Fatal(err)
		}
		return h
	}
	readWrite, readOnly := provision(false), provision(true)

	cases := []struct {
		name      string
		h         *Handler
		method    string
		path      string
		userAgent string
		want      string
	}{
		{"docker 1.4", readWrite, http.MethodGet, "/v2/", "docker/1.4.1", "old_client"},
		{"go agent of docker 1.5", readWrite, http.MethodGet, "/v2/", "Go 1.1 package http", "old_client"},
		{"pattern", readWrite, http.MethodGet, "/v2/", "evil-scanner/2.0", "user_agent"},
		{"dot segment", readWrite, http.MethodGet, "/v2/team/%2e%2e/manifests/1.0", "", "invalid_path"},
		{"invalid name", readWrite, http.MethodGet, "/v2/Team/manifests/1.0", "", "invalid_path"},
		{"invalid digest", readWrite, http.MethodGet, "/v2/team/blobs/sha256:xyz", "", "invalid_path"},
		{"invalid upload id", readWrite, http.MethodPatch, "/v2/team/blobs/uploads/bad%7Eid!", "", "invalid_path"},
		{"unknown endpoint", readWrite, http.MethodGet, "/v2/team/app/nowhere", "", "unknown_endpoint"},
		{"trace", readWrite, "TRACE", "/v2/", "", "method"},
		{"manifest push on read-only", readOnly, http.MethodPut, "/v2/team/manifests/1.0", "", "read_only"},
		{"upload on read-only", readOnly, http.MethodPost, "/v2/team/blobs/uploads/", "", "read_only"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := http.NewRequest(c.method, "https://mydocker"+c.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			r.Header.Set("User-Agent", c.userAgent)
			_, _, _, rerr := c.h.route(r)
			if rerr == nil {
				t.Fatal("got no rejection, want one")
			}
			if got := rejectionReasonNames[rejectionReasonOf(rerr)]; got != c.want {
				t.Errorf("reason: got %q, want %q", got, c.want)
			}
		})
	}
}

func TestMetricIndexesMatchLabelValues(t *testing.T) {
	for i, operation := range metricOperations {
		if got := operationIndex(operation); got != i {
			t.Errorf("operationIndex(%q): got %d, want %d", operation, got, i)
		}
	}
	for i, target := range metricTargets {
		if got := targetIndex(target); got != i {
			t.Errorf("targetIndex(%q): got %d, want %d", target, got, i)
		}
	}
	for i, method := range uploadMethods {
		if got := uploadMethodIndex(method); got != i {
			t.Errorf("uploadMethodIndex(%q): got %d, want %d", method, got, i)
		}
	}
	for status, want := range map[int]string{200: "2xx", 204: "2xx", 307: "3xx", 404: "4xx", 499: "4xx", 502: "5xx", 504: "5xx"} {
		if got := metricCodes[codeIndex(status)]; got != want {
			t.Errorf("codeIndex(%d): got %s, want %s", status, got, want)
		}
	}
}

// readFromWriter stands for net/http's response writer, whose ReadFrom
// uses sendfile or splice.
type readFromWriter struct {
	http.ResponseWriter
	readFromBytes int64
	writeCalls    int
}

func (w *readFromWriter) ReadFrom(r io.Reader) (int64, error) {
	n, err := io.Copy(io.Discard, r)
	w.readFromBytes += n
	return n, err
}

func (w *readFromWriter) Write(p []byte) (int, error) {
	w.writeCalls++
	return len(p), nil
}

func TestObserverKeepsReadFromFastPath(t *testing.T) {
	m := newRegistryMetrics()
	underlying := &readFromWriter{ResponseWriter: httptest.NewRecorder()}
	o := &requestObserver{
		ResponseWriterWrapper: caddyhttp.ResponseWriterWrapper{ResponseWriter: underlying},
		metrics:               m,
		req:                   apiRequest{operation: opBlob},
		target:                targetPull,
	}
	fixer := &responseFixer{
		ResponseWriterWrapper: caddyhttp.ResponseWriterWrapper{ResponseWriter: o},
		apiVersion:            defaultAPIVersion,
		request:               httptest.NewRequest(http.MethodGet, "/v2/a/blobs/sha256:x", nil),
	}

	n, err := fixer.ReadFrom(bytes.NewReader(make([]byte, 1<<20)))
	if err != nil || n != 1<<20 {
		t.Fatalf("ReadFrom: got %d, %v; want %d, nil", n, err, 1<<20)
	}
	if underlying.readFromBytes != 1<<20 || underlying.writeCalls != 0 {
		t.Errorf("underlying writer: got %d bytes through ReadFrom and %d Write calls, want %d and 0",
			underlying.readFromBytes, underlying.writeCalls, 1<<20)
	}
	counter := m.responseByteCounters[operationIndex(opBlob)][targetIndex(targetPull)]
	var value dto.Metric
	if err := counter.Write(&value); err != nil {
		t.Fatal(err)
	}
	if got := value.GetCounter().GetValue(); got != 1<<20 {
		t.Errorf("response bytes: got %v, want %d", got, 1<<20)
	}
	if o.status != http.StatusOK {
		t.Errorf("status: got %d, want 200", o.status)
	}
}
