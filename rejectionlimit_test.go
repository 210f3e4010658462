package dockerregistry

import (
	"testing"
	"time"
)

func TestRejectionLimiterBurstThenSample(t *testing.T) {
	var l rejectionLimiter
	second := time.Unix(1000, 0)

	passed := 0
	for range 1005 {
		if l.allow(second) {
			passed++
		}
	}
	// the first 5, then every 100th of the following 1000
	if passed != 15 {
		t.Errorf("logged rejections within one second: got %d of 1005, want 15", passed)
	}

	if !l.allow(second.Add(time.Second)) {
		t.Error("first rejection of the next second: got dropped, want logged")
	}
}
