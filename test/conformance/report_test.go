package conformance

import (
	"encoding/xml"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// rootName is the name of the suite's root test, the first segment of
// every test case name.
const rootName = "OCI Conformance Test"

// Test case results as the suite writes them to junit.xml.
const (
	junitPassed  = "passed"
	junitSkipped = "skipped"
	junitFailure = "failure"
	junitError   = "error"
)

// runResults are the reports of one run.
type runResults struct {
	cases []testCase
	// apis and data are the verdicts of results.yaml, by name.
	apis map[string]string
	data map[string]string
}

// testCase is one leaf test of the suite.
type testCase struct {
	Name   string `xml:"name,attr"`
	Status string `xml:"status,attr"`
	// Errors holds the test's errors; the suite writes them as system-out.
	Errors string `xml:"system-out"`
	// Output holds the requests and responses, and the reason of a skip.
	Output string `xml:"system-err"`
}

type junitReport struct {
	Suites []struct {
		Cases []testCase `xml:"testcase"`
	} `xml:"testsuite"`
}

// readRunResults reads junit.xml and results.yaml from a results directory.
func readRunResults(dir string) (runResults, error) {
	var results runResults

	b, err := os.ReadFile(filepath.Join(dir, "junit.xml"))
	if err != nil {
		return results, fmt.Errorf("reading the JUnit report: %w", err)
	}
	var report junitReport
	if err := xml.Unmarshal(b, &report); err != nil {
		return results, fmt.Errorf("decoding %s: %w", filepath.Join(dir, "junit.xml"), err)
	}
	for _, suite := range report.Suites {
		results.cases = append(results.cases, suite.Cases...)
	}
	for _, c := range results.cases {
		switch c.Status {
		case junitPassed, junitSkipped, junitFailure, junitError:
		default:
			return results, fmt.Errorf("test case %q has status %q, want one of passed, skipped, failure, error", c.Name, c.Status)
		}
	}

	b, err = os.ReadFile(filepath.Join(dir, "results.yaml"))
	if err != nil {
		return results, fmt.Errorf("reading the YAML results: %w", err)
	}
	var verdicts struct {
		APIs map[string]string `yaml:"apis"`
		Data map[string]string `yaml:"data"`
	}
	if err := yaml.Unmarshal(b, &verdicts); err != nil {
		return results, fmt.Errorf("decoding %s: %w", filepath.Join(dir, "results.yaml"), err)
	}
	results.apis, results.data = verdicts.APIs, verdicts.Data
	return results, nil
}

// statusesByName returns the sorted results of the test cases of each
// name. The suite names leaf tests by their path, which repeats when a
// group runs the same test on several tags or manifests, and it walks
// those in Go map order, which differs from run to run. So results of one
// name can only be compared as a multiset.
func statusesByName(cases []testCase) map[string][]string {
	byName := map[string][]string{}
	for _, c := range cases {
		byName[c.Name] = append(byName[c.Name], c.Status)
	}
	for _, statuses := range byName {
		sort.Strings(statuses)
	}
	return byName
}

// compareRuns lists every test case whose result differs between the two
// runs, and every verdict on an API or content kind that differs.
func compareRuns(direct, module runResults) []string {
	var differences []string

	directByName, moduleByName := statusesByName(direct.cases), statusesByName(module.cases)
	moduleErrors := map[string]string{}
	for _, c := range module.cases {
		if c.Status != junitPassed && moduleErrors[c.Name] == "" {
			moduleErrors[c.Name] = firstReason(c)
		}
	}
	for _, name := range unionKeys(directByName, moduleByName) {
		d, m := directByName[name], moduleByName[name]
		if slices.Equal(d, m) {
			continue
		}
		difference := fmt.Sprintf("%s: direct %v, through the module %v", name, d, m)
		if reason := moduleErrors[name]; reason != "" {
			difference += ": " + reason
		}
		differences = append(differences, difference)
	}

	for _, kind := range []struct {
		label          string
		direct, module map[string]string
	}{{"API", direct.apis, module.apis}, {"content", direct.data, module.data}} {
		for _, name := range unionKeys(kind.direct, kind.module) {
			if d, m := kind.direct[name], kind.module[name]; d != m {
				differences = append(differences, fmt.Sprintf("%s %q: direct %q, through the module %q", kind.label, name, d, m))
			}
		}
	}
	return differences
}

func unionKeys[V any](a, b map[string]V) []string {
	keys := make([]string, 0, len(a)+len(b))
	for k := range a {
		keys = append(keys, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

// firstReason returns the first line of a test case's error, or of the
// reason the suite wrote for a skip.
func firstReason(c testCase) string {
	text := strings.TrimSpace(c.Errors)
	if text == "" {
		// a skip writes "<name>: skipping test:" and the reason below it
		_, reason, found := strings.Cut(c.Output, "skipping test:")
		if found {
			text = strings.TrimSpace(reason)
		}
	}
	line, _, _ := strings.Cut(text, "\n")
	return strings.TrimSpace(line)
}

func totalsOf(cases []testCase) Totals {
	var t Totals
	for _, c := range cases {
		switch c.Status {
		case junitPassed:
			t.Passed++
		case junitFailure:
			t.Failed++
		case junitError:
			t.Errors++
		case junitSkipped:
			t.Skipped++
		}
	}
	return t
}

// groupOf returns the top-level group of a test case name, such as
// "sha256 blobs" for "OCI Conformance Test/sha256 blobs/blob-post-put".
func groupOf(name string) string {
	rest := strings.TrimPrefix(name, rootName+"/")
	group, _, _ := strings.Cut(rest, "/")
	return group
}

// summarize builds the summary of both runs. Groups keep the suite's order.
func summarize(direct, module runResults, differences []string) Summary {
	s := Summary{
		Direct:      totalsOf(direct.cases),
		Module:      totalsOf(module.cases),
		Differences: differences,
	}
	if s.Differences == nil {
		s.Differences = []string{}
	}

	groupCases := func(cases []testCase) (map[string][]testCase, []string) {
		byGroup := map[string][]testCase{}
		var order []string
		for _, c := range cases {
			g := groupOf(c.Name)
			if _, seen := byGroup[g]; !seen {
				order = append(order, g)
			}
			byGroup[g] = append(byGroup[g], c)
		}
		return byGroup, order
	}
	directGroups, order := groupCases(direct.cases)
	moduleGroups, moduleOrder := groupCases(module.cases)
	for _, g := range moduleOrder {
		if _, ok := directGroups[g]; !ok {
			order = append(order, g)
		}
	}
	for _, g := range order {
		s.Groups = append(s.Groups, GroupTotals{Name: g, Direct: totalsOf(directGroups[g]), Module: totalsOf(moduleGroups[g])})
	}

	for _, name := range unionKeys(direct.apis, module.apis) {
		s.APIs = append(s.APIs, CategoryStatus{Name: name, Direct: direct.apis[name], Module: module.apis[name]})
	}
	for _, name := range unionKeys(direct.data, module.data) {
		s.Data = append(s.Data, CategoryStatus{Name: name, Direct: direct.data[name], Module: module.data[name]})
	}

	s.DirectFailures = []Failure{}
	index := map[Failure]int{}
	for _, c := range direct.cases {
		if c.Status == junitPassed {
			continue
		}
		key := Failure{Group: groupOf(c.Name), Result: c.Status, Error: shortReason(firstReason(c))}
		i, seen := index[key]
		if !seen {
			i = len(s.DirectFailures)
			index[key] = i
			s.DirectFailures = append(s.DirectFailures, key)
		}
		s.DirectFailures[i].Count++
	}
	return s
}

var digestPattern = regexp.MustCompile(`sha(256|512):[0-9a-f]{16,}`)

// maxReasonLength bounds an error message in the summary; the full text is
// in the reports.
const maxReasonLength = 160

// shortReason replaces digests in an error message and cuts it short.
func shortReason(reason string) string {
	reason = digestPattern.ReplaceAllString(reason, "<digest>")
	if len(reason) > maxReasonLength {
		reason = reason[:maxReasonLength] + "..."
	}
	return reason
}

func TestCompareRunsReportsDifferences(t *testing.T) {
	direct := runResults{
		cases: []testCase{
			{Name: rootName + "/image/push/manifest-by-tag", Status: junitPassed},
			{Name: rootName + "/image/push/manifest-by-tag", Status: junitFailure},
			{Name: rootName + "/ping", Status: junitPassed},
			{Name: rootName + "/only-direct", Status: junitPassed},
		},
		apis: map[string]string{"Ping": "Pass"},
	}
	module := runResults{
		cases: []testCase{
			// the same multiset in another order is no difference
			{Name: rootName + "/image/push/manifest-by-tag", Status: junitFailure},
			{Name: rootName + "/image/push/manifest-by-tag", Status: junitPassed},
			{Name: rootName + "/ping", Status: junitFailure, Errors: "ping failed: 502\nmore"},
		},
		apis: map[string]string{"Ping": "FAIL"},
	}

	got := compareRuns(direct, module)
	want := []string{
		rootName + "/only-direct: direct [passed], through the module []",
		rootName + "/ping: direct [passed], through the module [failure]: ping failed: 502",
		`API "Ping": direct "Pass", through the module "FAIL"`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("compareRuns:\ngot  %q\nwant %q", got, want)
	}
	if same := compareRuns(direct, direct); len(same) != 0 {
		t.Errorf("compareRuns of a run with itself: got %q, want no differences", same)
	}
}

func TestSummarizeCountsFailuresByCause(t *testing.T) {
	run := runResults{cases: []testCase{
		{Name: rootName + "/sha512/head/blob-head", Status: junitFailure, Errors: "Docker-Content-Digest header value expected \"sha512:" + strings.Repeat("ab", 32) + "\""},
		{Name: rootName + "/sha512/head/blob-head", Status: junitFailure, Errors: "Docker-Content-Digest header value expected \"sha512:" + strings.Repeat("cd", 32) + "\""},
		{Name: rootName + "/sha512/pull/blob-get", Status: junitPassed},
		{Name: rootName + "/referrers", Status: junitSkipped, Output: rootName + "/referrers: skipping test:\n  api Referrers is disabled\n"},
	}}

	s := summarize(run, run, nil)

	wantFailures := []Failure{
		{Group: "sha512", Result: junitFailure, Error: `Docker-Content-Digest header value expected "<digest>"`, Count: 2},
		{Group: "referrers", Result: junitSkipped, Error: "api Referrers is disabled", Count: 1},
	}
	if !slices.Equal(s.DirectFailures, wantFailures) {
		t.Errorf("direct failures:\ngot  %+v\nwant %+v", s.DirectFailures, wantFailures)
	}
	wantGroups := []GroupTotals{
		{Name: "sha512", Direct: Totals{Passed: 1, Failed: 2}, Module: Totals{Passed: 1, Failed: 2}},
		{Name: "referrers", Direct: Totals{Skipped: 1}, Module: Totals{Skipped: 1}},
	}
	if !slices.Equal(s.Groups, wantGroups) {
		t.Errorf("groups:\ngot  %+v\nwant %+v", s.Groups, wantGroups)
	}
	if s.Differences == nil || len(s.Differences) != 0 {
		t.Errorf("differences: got %#v, want an empty list", s.Differences)
	}
}
