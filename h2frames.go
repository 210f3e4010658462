package dockerregistry

import (
	"io"
	"net/http"
	"strconv"
	"sync"
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
// a pooled buffer until the next write, a Flush or the end of the response.
type frameAligner struct {
	w       io.Writer
	partial *[]byte
}

func (a *frameAligner) Write(p []byte) (int, error) {
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
	buf := *a.partial
	copied := copy(buf[len(buf):alignedPieceLen], p)
	buf = buf[:len(buf)+copied]
	*a.partial = buf
	if len(buf) < alignedPieceLen {
		return copied, nil
	}
	if _, err := a.w.Write(buf); err != nil {
		// the bytes copied from p were not sent
		return 0, err
	}
	*a.partial = buf[:0]
	return copied, nil
}

// flush sends a waiting remainder.
func (a *frameAligner) flush() error {
	if a.partial == nil || len(*a.partial) == 0 {
		return nil
	}
	_, err := a.w.Write(*a.partial)
	*a.partial = (*a.partial)[:0]
	return err
}

// release puts the buffer back into the pool. The aligner must not be
// used after it.
func (a *frameAligner) release() {
	if a.partial != nil {
		*a.partial = (*a.partial)[:0]
		alignedPiecePool.Put(a.partial)
		a.partial = nil
	}
}
