package dockerregistry

import (
	"crypto/tls"
	"net/http"
	"testing"
)

func testRewriter(host string, useTLS bool, prefix string) originRewriter {
	r := &http.Request{Host: host}
	if useTLS {
		r.TLS = &tls.ConnectionState{}
	}
	return newOriginRewriter(r, []string{"nexus", "10.0.0.5", "::1"}, prefix)
}

func TestRewriteURL(t *testing.T) {
	const upload = "/v2/app/blobs/uploads/" + testUpload + "?_state=aGVsbG8%2Bd29ybGQ%3D%3D&a=b+c"
	cases := []struct {
		name   string
		host   string
		prefix string
		in     string
		want   string
	}{
		{"dial address", "mydocker:8083", "", "http://nexus:8083" + upload, "https://mydocker:8083" + upload},
		{"internal host other port", "mydocker:8083", "", "http://nexus:8081" + upload, "https://mydocker:8083" + upload},
		{"upstream IP", "mydocker:8083", "", "http://10.0.0.5:8083" + upload, "https://mydocker:8083" + upload},
		{"upstream IPv6", "mydocker", "", "http://[::1]:8083" + upload, "https://mydocker" + upload},
		{"plain http on public host", "mydocker:8083", "", "http://mydocker:8083" + upload, "https://mydocker:8083" + upload},
		{"explicit 443", "mydocker", "", "http://mydocker:443" + upload, "https://mydocker" + upload},
		{"client used explicit 443", "mydocker:443", "", "http://nexus:8082" + upload, "https://mydocker" + upload},
		{"doubled port", "mydocker:8083", "", "https://mydocker:8083:8083/v2/token", "https://mydocker:8083/v2/token"},
		{"null scheme", "mydocker:8083", "", "null://mydocker:8083/v2/token", "https://mydocker:8083/v2/token"},
		{"case-insensitive host", "mydocker:8083", "", "HTTP://NEXUS:8083/v2/", "https://mydocker:8083/v2/"},
		{"scheme-relative", "mydocker:8083", "", "//nexus:8083/v2/", "https://mydocker:8083/v2/"},
		{"no path", "mydocker:8083", "", "http://nexus:8083", "https://mydocker:8083"},
		{"query only", "mydocker:8083", "", "http://nexus:8083?x=1", "https://mydocker:8083?x=1"},
		{"userinfo dropped", "mydocker:8083", "", "http://admin@nexus:8083/v2/", "https://mydocker:8083/v2/"},
		{"path prefix removed", "mydocker", "/repository/docker-group", "http://nexus:8081/repository/docker-group" + upload, "https://mydocker" + upload},
		{"path prefix relative", "mydocker", "/repository/docker-group", "/repository/docker-group" + upload, upload},
		{"path prefix only", "mydocker", "/repository/docker-group", "http://nexus:8081/repository/docker-group", "https://mydocker/"},
		{"prefix not a whole segment", "mydocker", "/repository/docker-group", "http://nexus:8081/repository/docker-groupie/v2/", "https://mydocker/repository/docker-groupie/v2/"},
		{"encoded path bytes kept", "mydocker", "", "http://nexus:8083/v2/app/manifests/sha256%3Aab?x=%2F", "https://mydocker/v2/app/manifests/sha256%3Aab?x=%2F"},
		{"plain listener keeps http", "mydocker:8080", "", "http://nexus:8083/v2/", "http://mydocker:8080/v2/"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			useTLS := c.name != "plain listener keeps http"
			got, _ := testRewriter(c.host, useTLS, c.prefix).rewriteURL(c.in)
			if got != c.want {
				t.Errorf("\n got %s\nwant %s", got, c.want)
			}
		})
	}
}

func TestRewriteURLLeavesForeignURLs(t *testing.T) {
	rw := testRewriter("mydocker:8083", true, "")
	for _, in := range []string{
		"https://auth.example.com/token",
		"https://mydocker.example.com/v2/",
		"/v2/app/blobs/uploads/" + testUpload,
		"relative/path",
		"mailto:ops@example.com",
		"http:///v2/",
		"",
	} {
		if got, changed := rw.rewriteURL(in); changed || got != in {
			t.Errorf("%q: got %q (changed %v), want it unchanged", in, got, changed)
		}
	}
}

func TestRewriteBearerRealm(t *testing.T) {
	cases := []struct{ in, want string }{
		{`Bearer realm="http://nexus:8083/v2/token",service="Nexus",scope="repository:app:pull"`,
			`Bearer realm="https://mydocker:8083/v2/token",service="Nexus",scope="repository:app:pull"`},
		{`bearer service="Nexus", realm="null://mydocker:8083/v2/token"`,
			`bearer service="Nexus", realm="https://mydocker:8083/v2/token"`},
		{`Bearer realm=http://nexus:8083/v2/token,service=Nexus`,
			`Bearer realm=https://mydocker:8083/v2/token,service=Nexus`},
		{`Bearer scope="a,realm=x",realm="http://nexus:8083/v2/token"`,
			`Bearer scope="a,realm=x",realm="https://mydocker:8083/v2/token"`},
		{`Bearer REALM="https://mydocker:8083:8083/v2/token"`,
			`Bearer REALM="https://mydocker:8083/v2/token"`},
		// left alone: other hosts, other schemes, malformed values
		{`Bearer realm="https://auth.docker.io/token",service="registry.docker.io"`,
			`Bearer realm="https://auth.docker.io/token",service="registry.docker.io"`},
		{`Basic realm="http://nexus:8083/"`, `Basic realm="http://nexus:8083/"`},
		{`Bearer realm="http://nexus:8083/v2/tok\"en"`, `Bearer realm="http://nexus:8083/v2/tok\"en"`},
		{`Bearer realm="http://nexus:8083/v2/token`, `Bearer realm="http://nexus:8083/v2/token`},
		{`Bearer service="x"`, `Bearer service="x"`},
		{`Bearer`, `Bearer`},
	}
	rw := testRewriter("mydocker:8083", true, "")
	for _, c := range cases {
		t.Run(c.in, func(t *testing.T) {
			got, _ := rw.rewriteBearerRealm(c.in)
			if got != c.want {
				t.Errorf("\n got %s\nwant %s", got, c.want)
			}
		})
	}
}
