package dockerregistry

import (
	"errors"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// Label values of the module's metrics. Each list is closed, so the number
// of series is fixed; repository names, references and upload ids never
// become label values.
var (
	metricOperations = [...]string{opPing, opToken, opCatalog, opTags, opManifest, opBlob, opUpload, opReferrers, opExtension, opInvalid}
	metricTargets    = [...]string{targetPull, targetPush, targetModule}
	metricCodes      = [...]string{"2xx", "3xx", "4xx", "5xx"}
	uploadMethods    = [...]string{http.MethodPost, http.MethodPatch, http.MethodPut}
)

// rejectionReason is the reason why the module responded to a request
// under /v2 itself instead of routing it to a target.
type rejectionReason uint8

const (
	// reasonUnset marks a registry error whose reason follows from its
	// status; see rejectionReasonOf.
	reasonUnset rejectionReason = iota
	reasonOldClient
	reasonUserAgent
	reasonInvalidPath
	reasonUnknownEndpoint
	reasonMethod
	reasonReadOnly
	reasonCount
)

// rejectionReasonNames are the values of the reason label, indexed by
// rejectionReason.
var rejectionReasonNames = [reasonCount]string{
	reasonUnset:           "",
	reasonOldClient:       "old_client",
	reasonUserAgent:       "user_agent",
	reasonInvalidPath:     "invalid_path",
	reasonUnknownEndpoint: "unknown_endpoint",
	reasonMethod:          "method",
	reasonReadOnly:        "read_only",
}

// uploadDurationBuckets span a small PATCH on a fast link up to the final
// PUT of a large layer that Nexus checksums or scans for minutes. The last
// bucket is the default read timeout of 900s.
var uploadDurationBuckets = []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900}

// registryMetrics are the collectors of the module and their children,
// resolved for every combination of label values once, so that counting
// a request takes no lock and allocates nothing.
type registryMetrics struct {
	requests       *prometheus.CounterVec
	requestBytes   *prometheus.CounterVec
	responseBytes  *prometheus.CounterVec
	uploadDuration *prometheus.HistogramVec
	rejections     *prometheus.CounterVec

	requestCounters      [len(metricOperations)][len(metricTargets)][len(metricCodes)]prometheus.Counter
	requestByteCounters  [len(metricOperations)][len(metricTargets)]prometheus.Counter
	responseByteCounters [len(metricOperations)][len(metricTargets)]prometheus.Counter
	uploadObservers      [len(uploadMethods)]prometheus.Observer
	rejectionCounters    [reasonCount]prometheus.Counter
}

// The collectors live as long as the process, not as long as one config:
// Caddy makes a new metrics registry for every config it loads, and
// registering the same collectors in each keeps the counters monotonic
// across reloads.
var (
	sharedMetricsOnce sync.Once
	sharedMetrics     *registryMetrics
)

// provisionMetrics returns the module's collectors, registered in the
// metrics registry of ctx. Every docker_registry handler of a config
// registers them in the same registry. The registry reports each repeat
// as an AlreadyRegisteredError naming the same collector, which is fine.
func provisionMetrics(ctx caddy.Context) (*registryMetrics, error) {
	sharedMetricsOnce.Do(func() { sharedMetrics = newRegistryMetrics() })
	registry := ctx.GetMetricsRegistry()
	if registry == nil {
		// a context made without caddy.NewContext has no registry, so
		// the handler counts and nothing exposes the counts
		return sharedMetrics, nil
	}
	for _, c := range sharedMetrics.collectors() {
		err := registry.Register(c)
		var already prometheus.AlreadyRegisteredError
		if err != nil && !(errors.As(err, &already) && already.ExistingCollector == c) {
			return nil, err
		}
	}
	return sharedMetrics, nil
}

func newRegistryMetrics() *registryMetrics {
	const namespace = "caddy_docker_registry"
	m := &registryMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "requests_total",
			Help:      "Registry API requests, by operation, target (pull, push, or module for requests the module answers itself, such as rejections and /v1 requests) and status class.",
		}, []string{"operation", "target", "code"}),
		requestBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "request_body_bytes_total",
			Help:      "Bytes of request bodies read from clients and sent to a target, counted as they stream.",
		}, []string{"operation", "target"}),
		responseBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "response_body_bytes_total",
			Help:      "Bytes of response bodies written to clients for requests routed to a target, counted as they stream.",
		}, []string{"operation", "target"}),
		uploadDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace,
			Name:      "upload_request_duration_seconds",
			Help:      "Duration of each upload request (POST, PATCH or PUT under /blobs/uploads/) routed to a target, by method.",
			Buckets:   uploadDurationBuckets,
		}, []string{"method"}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "rejections_total",
			Help:      "Requests the module rejected without contacting an upstream, by reason.",
		}, []string{"reason"}),
	}

	for o, operation := range metricOperations {
		for t, target := range metricTargets {
			for c, code := range metricCodes {
				m.requestCounters[o][t][c] = m.requests.WithLabelValues(operation, target, code)
			}
			// the module never forwards a body, so it has no byte series
			if target == targetModule {
				continue
			}
			m.requestByteCounters[o][t] = m.requestBytes.WithLabelValues(operation, target)
			m.responseByteCounters[o][t] = m.responseBytes.WithLabelValues(operation, target)
		}
	}
	for i, method := range uploadMethods {
		m.uploadObservers[i] = m.uploadDuration.WithLabelValues(method)
	}
	for reason := reasonUnset + 1; reason < reasonCount; reason++ {
		m.rejectionCounters[reason] = m.rejections.WithLabelValues(rejectionReasonNames[reason])
	}
	return m
}

func (m *registryMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.requests, m.requestBytes, m.responseBytes, m.uploadDuration, m.rejections}
}

// countRejection counts a request that the module responded to with rerr.
func (m *registryMetrics) countRejection(operation string, rerr *registryError) {
	m.requestCounters[operationIndex(operation)][targetIndex(targetModule)][codeIndex(rerr.status)].Inc()
	m.rejectionCounters[rejectionReasonOf(rerr)].Inc()
}

// rejectionReasonOf returns the reason of a registry error. The errors of
// classifyRequest carry none, because their status shows it: 404 for a
// path that is no endpoint of the registry API, 400 for an invalid one.
// NOTE: a new kind of rejection in route must set its reason, or it is
// counted as invalid_path or unknown_endpoint.
func rejectionReasonOf(rerr *registryError) rejectionReason {
	if rerr.reason != reasonUnset {
		return rerr.reason
	}
	if rerr.status == http.StatusNotFound {
		return reasonUnknownEndpoint
	}
	return reasonInvalidPath
}

func operationIndex(operation string) int {
	switch operation {
	case opPing:
		return 0
	case opToken:
		return 1
	case opCatalog:
		return 2
	case opTags:
		return 3
	case opManifest:
		return 4
	case opBlob:
		return 5
	case opUpload:
		return 6
	case opReferrers:
		return 7
	case opExtension:
		return 8
	}
	return 9 // opInvalid
}

func targetIndex(target string) int {
	switch target {
	case targetPull:
		return 0
	case targetPush:
		return 1
	}
	return 2 // targetModule
}

// codeIndex maps a status to its class in metricCodes.
// NOTE: informational statuses never end a registry request, because the
// module removes Upgrade headers; one that did would count as 2xx.
func codeIndex(status int) int {
	switch {
	case status < 300:
		return 0
	case status < 400:
		return 1
	case status < 500:
		return 2
	}
	return 3
}

func uploadMethodIndex(method string) int {
	switch method {
	case http.MethodPost:
		return 0
	case http.MethodPatch:
		return 1
	case http.MethodPut:
		return 2
	}
	return -1
}

// requestObserver records the metrics and the access log fields of one
// request under /v2. Between routing and the end of the request it is
// also the response writer under the responseFixer, where it counts
// response body bytes and notes the status. Its request body reader
// counts the bytes of the request body.
type requestObserver struct {
	caddyhttp.ResponseWriterWrapper
	body requestBodyCounter

	metrics *registryMetrics
	repl    *caddy.Replacer
	req     apiRequest
	target  string
	start   time.Time
	status  int
	proxied bool
}

// observe starts recording a classified request, and adds its registry
// fields to the access log entry that Caddy writes for it.
func (h *Handler) observe(w http.ResponseWriter, r *http.Request, repl *caddy.Replacer, req apiRequest, target string, start time.Time) *requestObserver {
	o := &requestObserver{
		ResponseWriterWrapper: caddyhttp.ResponseWriterWrapper{ResponseWriter: w},
		metrics:               h.metrics,
		repl:                  repl,
		req:                   req,
		target:                target,
		start:                 start,
	}
	o.addAccessLogFields(r)
	return o
}

// addAccessLogFields adds the observer as the object field
// "docker_registry" to the access log entry of r. It does so only when the
// server writes access logs, because adding the first extra field costs
// three allocations in Caddy 2.11.
func (o *requestObserver) addAccessLogFields(r *http.Request) {
	ctx := r.Context()
	server, ok := ctx.Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	if !ok || server == nil || server.Logs == nil {
		return
	}
	// Caddy's server puts the list of extra access log fields into every
	// request context
	if extra, ok := ctx.Value(caddyhttp.ExtraLogFieldsCtxKey).(*caddyhttp.ExtraLogFields); ok {
		extra.Add(zap.Object("docker_registry", o))
	}
}

// rejected counts a request that the module responded to with rerr.
func (o *requestObserver) rejected(rerr *registryError) {
	o.metrics.countRejection(o.req.operation, rerr)
}

// forward prepares r for its target: from here on, reading the request
// body counts its bytes. The observer itself is the response writer to
// hand to the target.
func (o *requestObserver) forward(r *http.Request) {
	o.proxied = true
	if r.Body != nil && r.Body != http.NoBody {
		o.body = requestBodyCounter{
			ReadCloser: r.Body,
			counter:    o.metrics.requestByteCounters[operationIndex(o.req.operation)][targetIndex(o.target)],
		}
		r.Body = &o.body
	}
}

// finish counts a forwarded request once its response is complete; err
// is what ServeHTTP returns to Caddy.
func (o *requestObserver) finish(r *http.Request, err error) {
	status := o.status
	if status == 0 {
		// nothing was written: net/http sends 200 for a nil error, and
		// Caddy responds to an error with its status (499 when the
		// client went away) or 500
		status = http.StatusOK
		if err != nil {
			status = http.StatusInternalServerError
			var handlerErr caddyhttp.HandlerError
			if errors.As(err, &handlerErr) && handlerErr.StatusCode != 0 {
				status = handlerErr.StatusCode
			}
		}
	}
	operation := operationIndex(o.req.operation)
	o.metrics.requestCounters[operation][targetIndex(o.target)][codeIndex(status)].Inc()
	if o.req.operation == opUpload {
		if i := uploadMethodIndex(r.Method); i >= 0 {
			o.metrics.uploadObservers[i].Observe(time.Since(o.start).Seconds())
		}
	}
}

func (o *requestObserver) WriteHeader(status int) {
	// the first final status is the one the client receives, because
	// informational responses such as 100 Continue come before it
	if o.status == 0 && status >= 200 {
		o.status = status
	}
	o.ResponseWriter.WriteHeader(status)
}

func (o *requestObserver) Write(p []byte) (int, error) {
	if o.status == 0 {
		o.status = http.StatusOK
	}
	n, err := o.ResponseWriter.Write(p)
	o.countResponseBytes(int64(n))
	return n, err
}

// ReadFrom keeps the fast path of the underlying writer (sendfile,
// splice) and counts what it copied.
func (o *requestObserver) ReadFrom(r io.Reader) (int64, error) {
	if o.status == 0 {
		o.status = http.StatusOK
	}
	n, err := o.ResponseWriterWrapper.ReadFrom(r)
	o.countResponseBytes(n)
	return n, err
}

func (o *requestObserver) countResponseBytes(n int64) {
	if n > 0 {
		o.metrics.responseByteCounters[operationIndex(o.req.operation)][targetIndex(o.target)].Add(float64(n))
	}
}

// MarshalLogObject writes the registry fields of the access log entry:
// what the request was, where it went and, once proxied, the upstream
// that responded. Caddy calls it when it writes the entry, after the
// handler returned.
func (o *requestObserver) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddString("operation", o.req.operation)
	if o.req.repository != "" {
		enc.AddString("repository", o.req.repository)
	}
	if o.req.reference != "" {
		enc.AddString("reference", o.req.reference)
	}
	if o.req.uploadID != "" {
		enc.AddString("upload_id", o.req.uploadID)
	}
	enc.AddString("target", o.target)
	if o.proxied {
		if upstream, _ := o.repl.GetString("http.reverse_proxy.upstream.hostport"); upstream != "" {
			enc.AddString("upstream", upstream)
		}
	}
	return nil
}

// requestBodyCounter counts the bytes of a request body as the target
// reads them, without buffering.
type requestBodyCounter struct {
	io.ReadCloser
	counter prometheus.Counter
}

func (b *requestBodyCounter) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.counter.Add(float64(n))
	}
	return n, err
}

// Interface guards
var (
	_ http.ResponseWriter     = (*requestObserver)(nil)
	_ io.ReaderFrom           = (*requestObserver)(nil)
	_ zapcore.ObjectMarshaler = (*requestObserver)(nil)
)
