package dockerregistry

import (
	"net/http"
	"strings"
	"testing"
)

func TestClassifyValidPaths(t *testing.T) {
	cases := []struct {
		path       string
		operation  string
		repository string
		reference  string
		uploadID   string
	}{
		{"/v2", opPing, "", "", ""},
		{"/v2/", opPing, "", "", ""},
		{"/v2/token", opToken, "", "", ""},
		{"/v2/_catalog", opCatalog, "", "", ""},
		{"/v2/_oci/ext/discover", opExtension, "", "", ""},
		{"/v2/app/_oci/ext", opExtension, "app", "", ""},
		{"/v2/app/manifests/latest", opManifest, "app", "latest", ""},
		{"/v2/team/sub/app/manifests/1.0-rc.1_x", opManifest, "team/sub/app", "1.0-rc.1_x", ""},
		{"/v2/app/manifests/" + testDigest, opManifest, "app", testDigest, ""},
		{"/v2/app/manifests/sha256%3A" + testDigest[7:], opManifest, "app", testDigest, ""},
		{"/v2/a.b_c__d--e/manifests/x", opManifest, "a.b_c__d--e", "x", ""},
		{"/v2/manifests/manifests/latest", opManifest, "manifests", "latest", ""},
		{"/v2/blobs/uploads/manifests/latest", opManifest, "blobs/uploads", "latest", ""},
		{"/v2/app/blobs/" + testDigest, opBlob, "app", testDigest, ""},
		{"/v2/app/blobs/sha512:" + strings.Repeat("ab", 64), opBlob, "app", "sha512:" + strings.Repeat("ab", 64), ""},
		{"/v2/app/blobs/multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8", opBlob, "app", "multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8", ""},
		{"/v2/app/blobs/uploads/", opUpload, "app", "", ""},
		{"/v2/app/blobs/uploads", opUpload, "app", "", ""},
		{"/v2/app/blobs/uploads/" + testUpload, opUpload, "app", "", testUpload},
		{"/v2/team/app/blobs/uploads/YWJj-ZGVm_Z2hp=", opUpload, "team/app", "", "YWJj-ZGVm_Z2hp="},
		{"/v2/app/tags/list", opTags, "app", "", ""},
		{"/v2/app/referrers/" + testDigest, opReferrers, "app", testDigest, ""},
		{"/v2/" + strings.Repeat("a", 255) + "/tags/list", opTags, strings.Repeat("a", 255), "", ""},
	}
	for _, c := range cases {
		t.Run(c.path, func(t *testing.T) {
			req, rerr := classifyRequest(http.MethodGet, c.path)
			if rerr != nil {
				t.Fatalf("got error %v, want none", rerr)
			}
			if req.operation != c.operation {
				t.Errorf("operation: got %s, want %s", req.operation, c.operation)
			}
			if req.repository != c.repository {
				t.Errorf("repository: got %q, want %q", req.repository, c.repository)
			}
			if req.reference != c.reference {
				t.Errorf("reference: got %q, want %q", req.reference, c.reference)
			}
			if req.uploadID != c.uploadID {
				t.Errorf("upload id: got %q, want %q", req.uploadID, c.uploadID)
			}
		})
	}
}

func TestClassifyRejectsUnsafePaths(t *testing.T) {
	cases := []struct {
		path   string
		status int
		code   string
	}{
		{"/v2/../etc/passwd", 400, codeNameInvalid},
		{"/v2/app/../other/manifests/latest", 400, codeNameInvalid},
		{"/v2/./app/manifests/latest", 400, codeNameInvalid},
		{"/v2/%2e%2e/app/manifests/latest", 400, codeNameInvalid},
		{"/v2/%2E%2e/app/manifests/latest", 400, codeNameInvalid},
		{"/v2/app/%2e/manifests/latest", 400, codeNameInvalid},
		{"/v2/app%2fother/manifests/latest", 400, codeNameInvalid},
		{"/v2%2f../manifests/latest", 400, codeNameInvalid},
		{"/v2//app/manifests/latest", 400, codeNameInvalid},
		{"/v2/app//manifests/latest", 400, codeNameInvalid},
		{"/v2/app/manifests/latest/", 400, codeNameInvalid},
		{"/v2/app/tags/list/", 400, codeNameInvalid},
		{"/v2/app/blobs/uploads//", 400, codeNameInvalid},
		{"/v2/_catalog/", 400, codeNameInvalid},
		{"/v2/app%00/manifests/latest", 400, codeNameInvalid},
		{"/v2/app/manifests/lat%0d%0aest", 400, codeNameInvalid},
		{"/v2/app/manifests/lat%ffest", 400, codeNameInvalid},
		{"/v2/app/manifests/a%5cb", 400, codeNameInvalid},
		{"/v2/app/manifests/%zz", 400, codeNameInvalid},
		{"/v2/App/manifests/latest", 400, codeNameInvalid},
		{"/v2/-app/manifests/latest", 400, codeNameInvalid},
		{"/v2/app-/manifests/latest", 400, codeNameInvalid},
		{"/v2/a..b/manifests/latest", 400, codeNameInvalid},
		{"/v2/a___b/manifests/latest", 400, codeNameInvalid},
		{"/v2/" + strings.Repeat("a", 256) + "/tags/list", 400, codeNameInvalid},
		{"/v2/" + strings.Repeat("abcdefg/", 32) + "x/tags/list", 400, codeNameInvalid},
		{"/v2/app/manifests/" + strings.Repeat("t", 129), 400, codeTagInvalid},
		{"/v2/app/manifests/.hidden", 400, codeTagInvalid},
		{"/v2/app/manifests/-dash", 400, codeTagInvalid},
		{"/v2/app/blobs/latest", 400, codeDigestInvalid},
		{"/v2/app/blobs/sha256:abc", 400, codeDigestInvalid},
		{"/v2/app/blobs/sha256:" + strings.ToUpper(testDigest[7:]), 400, codeDigestInvalid},
		{"/v2/app/blobs/:abc", 400, codeDigestInvalid},
		{"/v2/app/blobs/sha256:", 400, codeDigestInvalid},
		{"/v2/app/referrers/latest", 400, codeDigestInvalid},
		{"/v2/app/blobs/uploads/bad%22id", 400, codeUploadInvalid},
		{"/v2/app/blobs/uploads/" + strings.Repeat("u", 513), 400, codeUploadInvalid},
		{"/v2/app", 404, codeUnsupported},
		{"/v2/app/unknown/endpoint", 404, codeUnsupported},
		{"/v2/app/tags/other", 404, codeUnsupported},
		{"/v2/manifests/latest", 404, codeUnsupported},
		{"/v2x", 400, codeNameInvalid},
	}
	for _, c := range cases {
		name := c.path
		if len(name) > 80 {
			name = name[:80]
		}
		t.Run(name, func(t *testing.T) {
			_, rerr := classifyRequest(http.MethodGet, c.path)
			if rerr == nil {
				t.Fatal("got no error, want a rejection")
			}
			if rerr.status != c.status {
				t.Errorf("status: got %d, want %d", rerr.status, c.status)
			}
			if rerr.code != c.code {
				t.Errorf("code: got %s, want %s", rerr.code, c.code)
			}
		})
	}
}

func TestClassifyWriteMethods(t *testing.T) {
	cases := map[string]bool{
		http.MethodGet: false, http.MethodHead: false, http.MethodOptions: false,
		http.MethodPost: true, http.MethodPut: true, http.MethodPatch: true, http.MethodDelete: true,
	}
	for method, want := range cases {
		req, rerr := classifyRequest(method, "/v2/app/manifests/latest")
		if rerr != nil {
			t.Fatalf("%s: unexpected error %v", method, rerr)
		}
		if req.write != want {
			t.Errorf("%s: write got %v, want %v", method, req.write, want)
		}
	}
}
