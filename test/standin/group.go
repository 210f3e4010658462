package standin

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/distribution/distribution/v3/registry/api/errcode"
	v2 "github.com/distribution/distribution/v3/registry/api/v2"
)

// group imitates a Nexus group repository. It is read-only and serves
// reads from its members in order, in-process, the way Nexus reads member
// repositories without HTTP.
//
//   - GET and HEAD of manifests and blobs return the first member response
//     that is not 404, or the last member's 404.
//   - /v2/_catalog and /v2/<name>/tags/list merge the lists of all members,
//     sorted and without duplicates, then apply the n and last parameters.
//   - The group itself serves /v2/.
//   - Every other method answers 405 with the OCI error code UNSUPPORTED.
type group struct {
	prefix  string
	members []*Registry
}

// newGroupRegistry creates the Group stand-in over members, in lookup
// order.
func newGroupRegistry(port int, prefix string, members ...*Registry) (*Registry, error) {
	return newRegistry("group", port, prefix, &group{prefix: prefix, members: members})
}

func (g *group) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	apiPath := strings.TrimPrefix(r.URL.Path, g.prefix)

	switch {
	case r.Method != http.MethodGet && r.Method != http.MethodHead:
		writeError(w, errcode.ErrorCodeUnsupported.WithMessage(
			fmt.Sprintf("%s is not supported by a group repository, which is read-only", r.Method)))
	case apiPath == "/v2" || apiPath == "/v2/":
		w.Header().Set("Docker-Distribution-Api-Version", "registry/2.0")
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte("{}"))
	case apiPath == "/v2/_catalog":
		g.serveMergedList(w, r, apiPath, "repositories")
	case strings.HasSuffix(apiPath, "/tags/list"):
		g.serveMergedList(w, r, apiPath, "tags")
	default:
		g.serveFirstFound(w, r, apiPath)
	}
}

func (g *group) serveFirstFound(w http.ResponseWriter, r *http.Request, apiPath string) {
	var response *httptest.ResponseRecorder
	for _, member := range g.members {
		response = member.serveInternal(r, apiPath)
		if response.Code != http.StatusNotFound {
			break
		}
	}
	copyResponse(w, response)
}

// serveMergedList merges the list named field ("repositories" or "tags")
// of the members' 200 responses. When no member returns 200, the last
// member's response is passed on, such as 404 NAME_UNKNOWN.
//
// NOTE: each member returns at most maxCatalogEntries repositories, so a
// merged catalog is cut off beyond that.
func (g *group) serveMergedList(w http.ResponseWriter, r *http.Request, apiPath, field string) {
	listRequest := r.Clone(r.Context())
	listRequest.Method = http.MethodGet
	listRequest.URL.RawQuery = ""
	if field == "repositories" {
		// Distribution returns 100 repositories unless n requests more.
		listRequest.URL.RawQuery = "n=" + strconv.Itoa(maxCatalogEntries)
	}

	var (
		merged   = map[string]bool{}
		name     string
		found    bool
		response *httptest.ResponseRecorder
	)
	for _, member := range g.members {
		response = member.serveInternal(listRequest, apiPath)
		if response.Code != http.StatusOK {
			continue
		}
		var page listPage
		if err := json.Unmarshal(response.Body.Bytes(), &page); err != nil {
			writeError(w, errcode.ErrorCodeUnknown.WithDetail(fmt.Sprintf("decode %s list of member %s: %v", field, member.Name, err)))
			return
		}
		for _, item := range append(page.Repositories, page.Tags...) {
			merged[item] = true
		}
		name = page.Name
		found = true
	}
	if !found {
		copyResponse(w, response)
		return
	}

	items, next, err := paginate(merged, r.URL.Query())
	if err != nil {
		writeError(w, err)
		return
	}
	if next != nil {
		nextURL := url.URL{Path: r.URL.Path, RawQuery: next.Encode()}
		w.Header().Set("Link", fmt.Sprintf("<%s>; rel=\"next\"", nextURL.String()))
	}
	body := map[string]any{field: items}
	if field == "tags" {
		body["name"] = name
	}
	w.Header().Set("Docker-Distribution-Api-Version", "registry/2.0")
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(body)
}

// listPage is the body of a catalog or tags list response.
type listPage struct {
	Name         string   `json:"name"`
	Repositories []string `json:"repositories"`
	Tags         []string `json:"tags"`
}

// paginate sorts the items, keeps those after the "last" parameter and at
// most "n" of them. It returns the query of the next page when items were
// cut off, as Distribution does in its Link header.
func paginate(set map[string]bool, query url.Values) ([]string, url.Values, error) {
	last := query.Get("last")
	items := make([]string, 0, len(set))
	for item := range set {
		if last == "" || item > last {
			items = append(items, item)
		}
	}
	sort.Strings(items)

	limitText := query.Get("n")
	if limitText == "" {
		return items, nil, nil
	}
	limit, err := strconv.Atoi(limitText)
	if err != nil || limit < 0 {
		return nil, nil, v2.ErrorCodePaginationNumberInvalid.WithDetail(map[string]string{"n": limitText})
	}
	if len(items) <= limit {
		return items, nil, nil
	}
	items = items[:limit]
	next := url.Values{"n": {limitText}}
	if limit > 0 {
		next.Set("last", items[limit-1])
	}
	return items, next, nil
}

// serveInternal runs a request against the member's Distribution app at
// apiPath ("/v2/...") under the member's own prefix. It skips the member's
// front, so nothing is recorded and no authentication runs beyond what the
// app itself does.
func (r *Registry) serveInternal(req *http.Request, apiPath string) *httptest.ResponseRecorder {
	inner := req.Clone(req.Context())
	inner.URL.Path = r.PathPrefix + apiPath
	inner.URL.RawPath = ""
	inner.RequestURI = inner.URL.RequestURI()

	response := httptest.NewRecorder()
	r.app.ServeHTTP(response, inner)
	return response
}

func copyResponse(w http.ResponseWriter, response *httptest.ResponseRecorder) {
	for name, values := range response.Header() {
		w.Header()[name] = values
	}
	w.WriteHeader(response.Code)
	_, _ = w.Write(response.Body.Bytes())
}
