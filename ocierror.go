package dockerregistry

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// Error codes of the OCI distribution specification that the module
// itself sends. Upstream errors are passed through unchanged.
const (
	codeNameInvalid   = "NAME_INVALID"
	codeTagInvalid    = "TAG_INVALID"
	codeDigestInvalid = "DIGEST_INVALID"
	codeUploadInvalid = "BLOB_UPLOAD_INVALID"
	codeDenied        = "DENIED"
	codeUnsupported   = "UNSUPPORTED"
	codeNotFound      = "NAME_UNKNOWN"
	codeUnavailable   = "UNAVAILABLE"
)

// registryError is an error response that the module sends itself, in the body shape
// that the OCI distribution specification defines for registry errors.
type registryError struct {
	status  int
	code    string
	message string
	detail  any
	reason  rejectionReason // for the rejections metric
	allow   string          // Allow header of a 405, as RFC 9110 requires
}

func (e *registryError) Error() string { return e.code + ": " + e.message }

// ociErrorBody is the JSON body of a registry error response.
type ociErrorBody struct {
	Errors []ociErrorEntry `json:"errors"`
}

type ociErrorEntry struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Detail  any    `json:"detail,omitempty"`
}

// writeRegistryError sends e as an OCI error response. HEAD requests get
// the same status and headers without a body, as RFC 9110 requires.
func writeRegistryError(w http.ResponseWriter, r *http.Request, apiVersion string, e *registryError) {
	body, err := json.Marshal(ociErrorBody{Errors: []ociErrorEntry{{
		Code:    e.code,
		Message: e.message,
		Detail:  e.detail,
	}}})
	if err != nil {
		// NOTE: only a detail value that cannot be encoded gets here; the
		// client still receives the code and message.
		body, _ = json.Marshal(ociErrorBody{Errors: []ociErrorEntry{{Code: e.code, Message: e.message}}})
	}

	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("X-Content-Type-Options", "nosniff")
	setAPIVersion(h, apiVersion)
	if e.allow != "" {
		h.Set("Allow", e.allow)
	}
	w.WriteHeader(e.status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

// setAPIVersion leaves exactly one Docker-Distribution-Api-Version line in h:
// the first value the upstream sent, or value when it sent none.
func setAPIVersion(h http.Header, value string) {
	existing := h.Values(apiVersionHeader)
	switch {
	case len(existing) == 0 || existing[0] == "":
		h[apiVersionHeader] = []string{value}
	case len(existing) > 1:
		h[apiVersionHeader] = existing[:1]
	}
}

// apiVersionHeader is the canonical form of the header that Docker clients
// read to confirm they talk to a registry speaking API v2.
const apiVersionHeader = "Docker-Distribution-Api-Version"
