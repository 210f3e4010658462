package dockerregistry

import (
	"sync"
	"time"
)

// rejectionLimiter passes the first rejectionBurst rejections of each
// second to the log, then one in rejectionSampling, as zap's sampler does
// with the same settings. zap's sampler allocates a 448 KiB table per
// logger (4096 counters for each of 7 levels, zap 1.28); this needs two
// numbers per handler.
type rejectionLimiter struct {
	mu     sync.Mutex
	second int64
	count  int
}

const (
	rejectionBurst    = 5
	rejectionSampling = 100
)

func (l *rejectionLimiter) allow(now time.Time) bool {
	second := now.Unix()
	l.mu.Lock()
	defer l.mu.Unlock()
	if second != l.second {
		l.second = second
		l.count = 0
	}
	l.count++
	return l.count <= rejectionBurst || (l.count-rejectionBurst)%rejectionSampling == 0
}
