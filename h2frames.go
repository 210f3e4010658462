package dockerregistry

import (
	"errors"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Go's HTTP/2 server, which Caddy runs, sends each DATA frame as one
// write of its 9-byte header and its payload. crypto/tls seals at most
// 16384 bytes into a record and sends every record with its own system
// call, so a frame with a full 16384-byte payload leaves as two records:
// a full one and one of 9 bytes. Handing the server pieces of 16375 bytes
// makes each frame fill exactly one record, which halves the write calls
// of a download. See BENCHMARKS.md, "HTTP/2 downloads".
const (
	tlsMaxRecordPayload = 16384
	h2FrameHeaderLen    = 9
	alignedPieceLen     = tlsMaxRecordPayload - h2FrameHeaderLen

	// alignMinLength is the smallest response body worth aligning: smaller
	// bodies (manifests, error JSON) go out in one or two frames anyway.
	alignMinLength = 64 << 10
)

// maxHoldTime bounds how long a remainder waits for more bytes. While the
// upstream streams, the next read follows within microseconds, but a
// paused upstream (Nexus fetching from a remote, say) must not keep the
// client waiting for bytes, or for the header that goes out with the first
// DATA frame. It is a variable so that a test can lengthen it.
var maxHoldTime = 10 * time.Millisecond

var errAlignerClosed = errors.New("response body written after the handler finished")

var alignedPiecePool = sync.Pool{
	New: func() any {
		b := make([]byte, 0, alignedPieceLen)
		return &b
	},
}

// shouldAlignFrames reports whether the response body to r, described by
// status and header, is a large HTTP/2 download of known length. Bodies of
// unknown length are left alone: reverse_proxy flushes them after every
// write, which would send each partial piece at once.
func shouldAlignFrames(r *http.Request, status int, header http.Header) bool {
	if r.ProtoMajor != 2 || r.Method != http.MethodGet {
		return false
	}
	if status != http.StatusOK && status != http.StatusPartialContent {
		return false
	}
	length, err := strconv.ParseInt(header.Get("Content-Length"), 10, 64)
	return err == nil && length >= alignMinLength
}

// frameAligner passes a response body on in writes of alignedPieceLen
// bytes. Whole pieces go out from the caller's slice. A remainder waits in
// a pooled buffer until the next write, a flush, the end of the response
// or a hold time of maxHoldTime to twice that, whichever comes first. The
// timer's flush runs on its own goroutine, so mu serializes every use of w.
type frameAligner struct {
	w       io.Writer
	flusher func() error // flushes the writer under w

	mu      sync.Mutex
	partial *[]byte
	closed  bool

	// The timer is armed at most once per maxHoldTime instead of at every
	// write, which would cost 3% of the CPU of a download. writes counts
	// the writes, and a timer that finds new ones since it was armed only
	// arms itself again. A remainder so waits at most about twice
	// maxHoldTime, plus the latency of the timer.
	timer        *time.Timer
	timerPending bool
	writes       uint64
	writesArmed  uint64
}

func (a *frameAligner) Write(p []byte) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return 0, errAlignerClosed
	}
	n, err := a.write(p)
	a.writes++
	a.armTimer()
	return n, err
}

func (a *frameAligner) write(p []byte) (int, error) {
	n, err := a.fillPartial(p)
	if err != nil || n == len(p) {
		return n, err
	}
	rest := p[n:]
	for len(rest) >= alignedPieceLen {
		if _, err := a.w.Write(rest[:alignedPieceLen]); err != nil {
			return len(p) - len(rest), err
		}
		rest = rest[alignedPieceLen:]
	}
	if len(rest) > 0 {
		if a.partial == nil {
			a.partial = alignedPiecePool.Get().(*[]byte)
		}
		*a.partial = append((*a.partial)[:0], rest...)
	}
	return len(p), nil
}

// fillPartial completes a waiting remainder from p and sends it once it
// is a whole piece. It returns the number of bytes it copied from p.
func (a *frameAligner) fillPartial(p []byte) (int, error) {
	if a.partial == nil || len(*a.partial) == 0 {
		return 0, nil
	}
	heldLen := len(*a.partial)
	buf := *a.partial
	copied := copy(buf[heldLen:alignedPieceLen], p)
	buf = buf[:heldLen+copied]
	if len(buf) < alignedPieceLen {
		*a.partial = buf
		return copied, nil
	}
	if _, err := a.w.Write(buf); err != nil {
		// the bytes copied from p count as not written, so drop them to
		// keep a later flush from sending them
		*a.partial = buf[:heldLen]
		return 0, err
	}
	*a.partial = buf[:0]
	return copied, nil
}

// armTimer starts the hold time when a remainder waits and the timer is
// not already running.
func (a *frameAligner) armTimer() {
	if a.timerPending || a.partial == nil || len(*a.partial) == 0 {
		return
	}
	a.timerPending = true
	a.writesArmed = a.writes
	if a.timer == nil {
		a.timer = time.AfterFunc(maxHoldTime, a.flushHeld)
		return
	}
	a.timer.Reset(maxHoldTime)
}

// flushHeld runs when the hold time is over. It sends the remainder if no
// write came since the timer was armed, and arms the timer again if one
// did.
func (a *frameAligner) flushHeld() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.timerPending = false
	if a.closed || a.partial == nil || len(*a.partial) == 0 {
		return
	}
	if a.writes != a.writesArmed {
		a.armTimer()
		return
	}
	if a.sendPartial() == nil && a.flusher != nil {
		// a failed flush means that the client is gone, and the handler's
		// next write fails the same way and ends the copy
		_ = a.flusher()
	}
}

// flush sends a waiting remainder.
func (a *frameAligner) flush() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return nil
	}
	return a.sendPartial()
}

func (a *frameAligner) sendPartial() error {
	if a.partial == nil || len(*a.partial) == 0 {
		return nil
	}
	_, err := a.w.Write(*a.partial)
	*a.partial = (*a.partial)[:0]
	return err
}

// close stops the timer and puts the buffer back into the pool, dropping
// anything still held. After close, writes fail and flushes do nothing,
// so that the timer cannot touch the response once the handler returned.
func (a *frameAligner) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return
	}
	a.closed = true
	if a.timer != nil {
		a.timer.Stop()
	}
	if a.partial != nil {
		*a.partial = (*a.partial)[:0]
		alignedPiecePool.Put(a.partial)
		a.partial = nil
	}
}
