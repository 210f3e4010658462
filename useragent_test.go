package dockerregistry

import (
	"regexp"
	"testing"
)

func TestOldDockerClientMatchesNginxExpression(t *testing.T) {
	// the expression of the classic nginx registry proxy, for reference:
	// ^(docker\/1\.(3|4|5(?!\.[0-9]-dev))|Go ).*$
	cases := []struct {
		agent string
		old   bool
	}{
		{"docker/1.3.0", true},
		{"docker/1.3", true},
		{"docker/1.30.1", true}, // the nginx expression matches any continuation
		{"docker/1.4.1 go/go1.3.3", true},
		{"docker/1.5.0 go/go1.4.1", true},
		{"docker/1.5", true},
		{"docker/1.5.0-dev", false},
		{"docker/1.5.9-dev go/go1.4", false},
		{"docker/1.5.10-dev", true},
		{"docker/1.5.0-de", true},
		{"docker/1.5.x-dev", true},
		{"docker/1.6.2", false},
		{"docker/1.2.0", false},
		{"docker/20.10.24 go/go1.19", false},
		{"Go 1.1 package http", true},
		{"Go ", true},
		{"Go-http-client/1.1", false},
		{"Go", false},
		{"go 1.1 package http", false},
		{"Docker/1.4.1", false},
		{" docker/1.4.1", false},
		{"containerd/1.7.0", false},
		{"", false},
	}
	for _, c := range cases {
		t.Run(c.agent, func(t *testing.T) {
			if got := isOldDockerClient(c.agent); got != c.old {
				t.Errorf("got %v, want %v", got, c.old)
			}
		})
	}
}

func TestUserAgentRulePatterns(t *testing.T) {
	rule := userAgentRule{patterns: []*regexp.Regexp{regexp.MustCompile(`^curl/`)}}
	if !rule.rejects([]string{"curl/8.5.0"}) {
		t.Error("curl/8.5.0: got allowed, want rejected by the pattern")
	}
	if rule.rejects([]string{"docker/1.4.1"}) {
		t.Error("docker/1.4.1: got rejected, want allowed with the built-in check off")
	}
	rule.rejectOldDocker = true
	if !rule.rejects([]string{"containerd/1.7", "docker/1.4.1"}) {
		t.Error("second User-Agent line docker/1.4.1: got allowed, want rejected")
	}
	if rule.rejects(nil) {
		t.Error("no User-Agent: got rejected, want allowed")
	}
}
