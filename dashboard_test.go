package dockerregistry

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// exportedSeries maps every metric name that a Prometheus query can name
// to the labels and label values of its series. A histogram contributes
// its _bucket (with le), _sum and _count series.
func exportedSeries(t *testing.T) map[string]map[string][]string {
	t.Helper()
	registry := prometheus.NewPedanticRegistry()
	for _, c := range newRegistryMetrics().collectors() {
		if err := registry.Register(c); err != nil {
			t.Fatal(err)
		}
	}
	families, err := registry.Gather()
	if err != nil {
		t.Fatal(err)
	}

	exported := map[string]map[string][]string{}
	add := func(name string, m *dto.Metric) {
		labels := exported[name]
		if labels == nil {
			labels = map[string][]string{}
			exported[name] = labels
		}
		for _, l := range m.GetLabel() {
			if !containsString(labels[l.GetName()], l.GetValue()) {
				labels[l.GetName()] = append(labels[l.GetName()], l.GetValue())
			}
		}
	}
	for _, family := range families {
		name := family.GetName()
		for _, m := range family.GetMetric() {
			if family.GetType() != dto.MetricType_HISTOGRAM {
				add(name, m)
				continue
			}
			add(name+"_sum", m)
			add(name+"_count", m)
			add(name+"_bucket", m)
			// le values are numbers in any spelling, so only the name counts
			exported[name+"_bucket"]["le"] = nil
		}
	}
	return exported
}

// dashboardExpressions returns the PromQL expressions of every panel
// target, nested panels of collapsed rows included, by panel title.
func dashboardExpressions(t *testing.T, path string) map[string][]string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	type panel struct {
		Title   string  `json:"title"`
		Panels  []panel `json:"panels"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	}
	var dashboard struct {
		Panels []panel `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dashboard); err != nil {
		t.Fatalf("decoding %s: %v", path, err)
	}
	expressions := map[string][]string{}
	var walk func([]panel)
	walk = func(panels []panel) {
		for _, p := range panels {
			for _, target := range p.Targets {
				if target.Expr == "" {
					t.Errorf("panel %q has a target without an expression", p.Title)
				}
				expressions[p.Title] = append(expressions[p.Title], target.Expr)
			}
			walk(p.Panels)
		}
	}
	walk(dashboard.Panels)
	return expressions
}

var (
	// metric names of Caddy, this module's included
	caddyMetricName = regexp.MustCompile(`\bcaddy_\w+`)
	// a selector: a metric name and its optional label matchers
	selector = regexp.MustCompile(`\b(caddy_docker_registry_\w+)(\{([^}]*)\})?`)
	// one label matcher inside braces
	labelMatcher = regexp.MustCompile(`^\s*(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"\s*$`)
	// grouping clauses of aggregations
	groupingClause = regexp.MustCompile(`\b(?:by|without)\s*\(([^)]*)\)`)
)

func TestGrafanaDashboardQueriesExportedMetrics(t *testing.T) {
	exported := exportedSeries(t)
	expressions := dashboardExpressions(t, "examples/grafana-dashboard.json")
	if len(expressions) == 0 {
		t.Fatal("got no panel with a query, want some")
	}

	used := map[string]bool{}
	for title, exprs := range expressions {
		for _, expr := range exprs {
			// every metric name must be one of the module's
			for _, name := range caddyMetricName.FindAllString(expr, -1) {
				if _, ok := exported[name]; !ok {
					t.Errorf("panel %q: metric %s is not exported by the module", title, name)
				}
			}

			// label matchers must name labels and, for equality, values
			// that the metric has
			labelsInExpr := map[string]bool{}
			selectors := selector.FindAllStringSubmatch(expr, -1)
			if len(selectors) == 0 {
				t.Errorf("panel %q: %s queries no caddy_docker_registry_ metric", title, expr)
			}
			for _, s := range selectors {
				name, matchers := s[1], s[3]
				labels := exported[name]
				used[strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")] = true
				for label := range labels {
					labelsInExpr[label] = true
				}
				if strings.TrimSpace(matchers) == "" {
					continue
				}
				for _, m := range strings.Split(matchers, ",") {
					parts := labelMatcher.FindStringSubmatch(m)
					if parts == nil {
						t.Errorf("panel %q: cannot parse label matcher %q in %s", title, m, expr)
						continue
					}
					label, op, value := parts[1], parts[2], parts[3]
					values, ok := labels[label]
					if !ok {
						t.Errorf("panel %q: %s has no label %s", title, name, label)
						continue
					}
					if (op == "=" || op == "!=") && values != nil && !containsString(values, value) {
						t.Errorf("panel %q: %s{%s} never has the value %q, want one of %q", title, name, label, value, values)
					}
				}
			}

			// grouping labels must belong to the metrics of the expression
			for _, clause := range groupingClause.FindAllStringSubmatch(expr, -1) {
				for _, label := range strings.Split(clause[1], ",") {
					label = strings.TrimSpace(label)
					if label != "" && !labelsInExpr[label] {
						t.Errorf("panel %q: grouping label %s is not a label of the metrics in %s", title, label, expr)
					}
				}
			}
		}
	}

	// every metric of the module has a panel
	for name := range exported {
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
		if !used[base] {
			t.Errorf("metric %s has no panel in the dashboard", base)
		}
	}
}
