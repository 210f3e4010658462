package standin

import (
	"errors"
	"io/fs"
	"net"
	"net/http"
	"os"
	"testing"
)

func startPlain(t *testing.T, users map[string]string) *Plain {
	t.Helper()
	p, err := StartPlain(users)
	if err != nil {
		t.Fatalf("StartPlain: %v", err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return p
}

func TestPlainKeepsBlobsPerImageName(t *testing.T) {
	p := startPlain(t, nil)
	image, err := SeedImage(t.Context(), p.BaseURL(), "first", "v1", 1)
	if err != nil {
		t.Fatalf("SeedImage: %v", err)
	}
	layer := layerDigests(t, image)[0]

	own := send(t, testRequest{method: http.MethodHead, url: p.URL + "/v2/first/blobs/" + layer.String()})
	if own.status != http.StatusOK {
		t.Errorf("HEAD blob under its own name: got status %d, want 200", own.status)
	}
	other := send(t, testRequest{method: http.MethodHead, url: p.URL + "/v2/second/blobs/" + layer.String()})
	if other.status != http.StatusNotFound {
		t.Errorf("HEAD blob under another name: got status %d, want 404", other.status)
	}
	if len(p.Requests()) == 0 {
		t.Errorf("recorded requests: got none, want the seed and HEAD requests")
	}
}

func TestPlainBasicAuth(t *testing.T) {
	p := startPlain(t, testUsers)

	anonymous := send(t, testRequest{method: http.MethodGet, url: p.URL + "/v2/"})
	checkOCIError(t, anonymous, http.StatusUnauthorized, "UNAUTHORIZED")

	request, err := http.NewRequest(http.MethodGet, p.URL+"/v2/", nil)
	if err != nil {
		t.Fatalf("build request: %v", err)
	}
	request.SetBasicAuth(testUser, testPassword)
	valid := send(t, testRequest{method: http.MethodGet, url: p.URL + "/v2/", header: request.Header})
	if valid.status != http.StatusOK {
		t.Errorf("ping with valid credentials: got status %d, want 200", valid.status)
	}
}

func TestPlainCloseStopsServer(t *testing.T) {
	p, err := StartPlain(testUsers)
	if err != nil {
		t.Fatalf("StartPlain: %v", err)
	}
	addr, tempDir := p.Addr, p.tempDir

	if err := p.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close: got %v, want nil", err)
	}
	if conn, err := net.Dial("tcp", addr); err == nil {
		conn.Close()
		t.Errorf("dial %s after Close: got a connection, want an error", addr)
	}
	if _, err := os.Stat(tempDir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stat %s after Close: got %v, want not exist", tempDir, err)
	}
}
