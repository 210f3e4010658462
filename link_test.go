package dockerregistry

import (
	"net/http"
	"testing"
)

func TestPaginationLinkMovedToPublicOrigin(t *testing.T) {
	var upstreamURL string
	up := newUpstream(t, "group", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", `</repository/docker-group/v2/_catalog?last=b&n=2>; rel="next"`)
		w.Header().Add("Link", `<`+upstreamURL+`/repository/docker-group/v2/app/tags/list?last=v2&n=2>; rel="next", <https://docs.example.com/api>; rel="help"`)
		w.WriteHeader(http.StatusOK)
	})
	upstreamURL = up.URL
	target := proxyTo(up.dial())
	target["path_prefix"] = "/repository/docker-group"
	tc := startCaddy(t, map[string]any{"handler": "docker_registry", "pull": target}, caddyOptions{})

	resp := do(t, tc.client(false), http.MethodGet, tc.url("mydocker", "/v2/_catalog?n=2"), nil, nil)
	want := []string{
		`</v2/_catalog?last=b&n=2>; rel="next"`,
		`<https://mydocker:` + tc.port + `/v2/app/tags/list?last=v2&n=2>; rel="next", <https://docs.example.com/api>; rel="help"`,
	}
	got := resp.Header.Values("Link")
	if len(got) != len(want) {
		t.Fatalf("Link: got %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("Link %d:\n got %s\nwant %s", i, got[i], want[i])
		}
	}
}

func TestRewriteLinksKeepsMalformedValues(t *testing.T) {
	rw := testRewriter("mydocker", true, "/p")
	for _, in := range []string{
		``,
		`no brackets`,
		`<unterminated`,
		`<https://docs.example.com/>; rel="help"`,
		`rel="next"`,
	} {
		if got, changed := rw.rewriteLinks(in); changed || got != in {
			t.Errorf("%q: got %q (changed %v), want it unchanged", in, got, changed)
		}
	}
	got, _ := rw.rewriteLinks(`</p/v2/a/tags/list?n=1>; rel="next",</p/v2/b/tags/list>; rel="next"`)
	if want := `</v2/a/tags/list?n=1>; rel="next",</v2/b/tags/list>; rel="next"`; got != want {
		t.Errorf("two links:\n got %s\nwant %s", got, want)
	}
}
