// Package clients runs real registry clients (the Docker engine and CLI,
// podman, skopeo and crane) against Caddy with the docker_registry module
// in front of stand-ins for a Nexus group and hosted repositories. Each
// client trusts Caddy's internal CA the way a user sets it up, and logs in
// to Nexus-like bearer-token and Basic authentication.
//
// This file holds the result matrix that the tests write to
// results/clients/matrix.json and that scripts/compat.sh renders into
// docs/COMPATIBILITY.md.
package clients

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

// Operation identifies one row of the compatibility matrix.
type Operation string

// The operations in the order of the matrix.
const (
	OpTrust        Operation = "trust"
	OpLogin        Operation = "login"
	OpWrongLogin   Operation = "login-wrong"
	OpPushHosted   Operation = "push-hosted"
	OpPushSplit    Operation = "push-split"
	OpPullGroup    Operation = "pull-group"
	OpPushIndex    Operation = "push-index"
	OpPushOnBase   Operation = "push-on-base"
	OpPushReadOnly Operation = "push-read-only"
	OpBasicAuth    Operation = "basic-auth"
	OpThreePort    Operation = "three-port-flow"
	OpUserAgent    Operation = "user-agent"
)

// Operations lists every operation with the matrix row label.
var Operations = []struct {
	Op    Operation
	Label string
}{
	{OpTrust, "Trusts Caddy's internal CA, rejects the server without it"},
	{OpLogin, "Logs in (Nexus-like bearer token)"},
	{OpWrongLogin, "Wrong password fails with the client's authentication error"},
	{OpPushHosted, "Pushes a 3-layer image to a hosted port (three-port setup)"},
	{OpPushSplit, "Pushes a 3-layer image to the one-hostname endpoint"},
	{OpPullGroup, "Pulls both back through the group, same digest"},
	{OpPushIndex, "Pushes a two-platform image index, pulls it through the group"},
	{OpPushOnBase, "Pushes an image whose base layers only the group's Docker Hub member holds"},
	{OpPushReadOnly, "Push to the read-only group fails with the module's \"read-only\" message"},
	{OpBasicAuth, "Basic authentication: wrong password fails, push and pull work"},
	{OpThreePort, "Three-port user flow: login on each port, pull via group, tag, push to snapshots and releases"},
	{OpUserAgent, "Old client agent docker/1.4.1 gets 404 OCI JSON, the engine's agent passes"},
}

// Result values of an operation.
const (
	ResultPass = "pass"
	ResultFail = "FAIL"
)

// Matrix is the outcome of one run of the client tests.
type Matrix struct {
	Clients []*ClientResult `json:"clients"`
}

// ClientResult holds the results of one client.
type ClientResult struct {
	// Name is the client's usual name, such as "Docker" or "skopeo".
	Name string `json:"name"`
	// Version is the version the client reported at run time.
	Version string `json:"version"`
	// Source is where the client comes from, such as a Debian package.
	Source string `json:"source"`
	// Results maps each operation that the tests ran with this client to
	// its result.
	Results map[Operation]string `json:"results"`
	// Notes are the client quirks that the test checks, one sentence each.
	Notes []string `json:"notes,omitempty"`
}

// ReadMatrix reads a matrix written by the client tests.
func ReadMatrix(path string) (Matrix, error) {
	var m Matrix
	b, err := os.ReadFile(path)
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("decoding %s: %w", path, err)
	}
	return m, nil
}

// WriteFile writes the matrix as indented JSON.
func (m Matrix) WriteFile(path string) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// Table renders the matrix as a Markdown table, one column per client.
func (m Matrix) Table() string {
	var b strings.Builder
	b.WriteString("| Operation |")
	for _, c := range m.Clients {
		fmt.Fprintf(&b, " %s %s |", c.Name, c.Version)
	}
	b.WriteString("\n|---|")
	for range m.Clients {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	for _, op := range Operations {
		fmt.Fprintf(&b, "| %s |", op.Label)
		for _, c := range m.Clients {
			fmt.Fprintf(&b, " %s |", c.cell(op.Op))
		}
		b.WriteString("\n")
	}
	return b.String()
}

// cell returns the table cell of an operation: its result, or "-" for one
// that the tests do not run with this client.
func (c *ClientResult) cell(op Operation) string {
	if result, ok := c.Results[op]; ok {
		return result
	}
	return "-"
}
