package dockerregistry

import (
	"io"
	"net/http"
	"runtime"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// heapSampler records the peak of live heap objects while a transfer runs.
// The test process holds the client, Caddy and the upstream, so the peak
// bounds all three together.
type heapSampler struct {
	peak atomic.Uint64
	stop chan struct{}
	done sync.WaitGroup
}

func startHeapSampler() *heapSampler {
	s := &heapSampler{stop: make(chan struct{})}
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	s.done.Add(1)
	go func() {
		defer s.done.Done()
		ticker := time.NewTicker(5 * time.Millisecond)
		defer ticker.Stop()
		for {
			metrics.Read(sample)
			if v := sample[0].Value.Uint64(); v > s.peak.Load() {
				s.peak.Store(v)
			}
			select {
			case <-s.stop:
				return
			case <-ticker.C:
			}
		}
	}()
	return s
}

func (s *heapSampler) finish() uint64 {
	close(s.stop)
	s.done.Wait()
	return s.peak.Load()
}

func TestChunkedUploadMemoryStaysBounded(t *testing.T) {
	const (
		size = 2 << 30
		// generous against GC timing, yet far below any buffering of the
		// body, which would need gigabytes
		maxGrowth = 48 << 20
	)
	tc, up := startSingle(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusAccepted) }, caddyOptions{})
	c := tc.client(false)

	// warm up connections and pools so the baseline includes them
	do(t, c, http.MethodGet, tc.url("mydocker", "/v2/"), nil, nil)
	runtime.GC()
	baseline := liveHeap()

	sampler := startHeapSampler()
	req, _ := http.NewRequest(http.MethodPatch, tc.url("mydocker", "/v2/app/blobs/uploads/"+testUpload), unsizedBody{io.LimitReader(zeroReader{}, size)})
	resp, err := c.Do(req)
	peak := sampler.finish()
	if err != nil {
		t.Fatalf("upload failed: %v", err)
	}
	resp.Body.Close()

	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("status: got %d, want 202", resp.StatusCode)
	}
	if got := up.last(t).BodyLength; got != size {
		t.Fatalf("upstream body: got %d bytes, want %d", got, size)
	}
	if peak > baseline && peak-baseline > maxGrowth {
		t.Errorf("heap grew by %d MiB during a 2 GiB upload, want at most %d MiB", (peak-baseline)>>20, maxGrowth>>20)
	}
	t.Logf("heap baseline %d KiB, peak %d KiB", baseline>>10, peak>>10)
}

func liveHeap() uint64 {
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(sample)
	return sample[0].Value.Uint64()
}
