package dockerregistry

import (
	"regexp"
	"strings"
)

// isOldDockerClient reports whether a User-Agent belongs to a Docker client
// of version 1.5 or older, which cannot speak the registry API v2 properly.
// It matches what the classic nginx registry proxy rejects with
// ^(docker\/1\.(3|4|5(?!\.[0-9]-dev))|Go ).*$ : agents starting with
// "docker/1.3", "docker/1.4", or "docker/1.5" unless followed by
// ".<one digit>-dev", and the bare "Go " agent those clients used for ping.
// Go's regexp package has no lookahead, hence the code.
func isOldDockerClient(ua string) bool {
	if strings.HasPrefix(ua, "Go ") {
		return true
	}
	rest, ok := strings.CutPrefix(ua, "docker/1.")
	if !ok || rest == "" {
		return false
	}
	switch rest[0] {
	case '3', '4':
		return true
	case '5':
		// 1.5.x-dev builds already spoke v2 and pass, but only with a
		// single-digit patch version, as in the nginx expression
		dev := rest[1:]
		return !(len(dev) >= 6 && dev[0] == '.' && dev[1] >= '0' && dev[1] <= '9' && strings.HasPrefix(dev[2:], "-dev"))
	}
	return false
}

// userAgentRule decides which clients are rejected.
type userAgentRule struct {
	rejectOldDocker bool
	patterns        []*regexp.Regexp
}

// rejects reports whether any User-Agent line of a request matches.
func (rule userAgentRule) rejects(agents []string) bool {
	return rule.rejection(agents) != reasonUnset
}

// rejection returns reasonOldClient or reasonUserAgent for the first
// User-Agent line that the rule rejects, and reasonUnset if it rejects
// none.
func (rule userAgentRule) rejection(agents []string) rejectionReason {
	for _, ua := range agents {
		if rule.rejectOldDocker && isOldDockerClient(ua) {
			return reasonOldClient
		}
		for _, p := range rule.patterns {
			if p.MatchString(ua) {
				return reasonUserAgent
			}
		}
	}
	return reasonUnset
}
