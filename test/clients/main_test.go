package clients

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// env is the environment that every client test uses: the stand-ins and
// Caddy, started once by TestMain because Caddy keeps its configuration in
// package state.
var env *environment

// matrix collects the result of each operation for results/clients.
var matrix = &recorder{}

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	var err error
	env, err = startEnvironment()
	if err != nil {
		fmt.Fprintf(os.Stderr, "starting the test environment: %v\n", err)
		return 1
	}
	code := m.Run()
	if err := env.close(); err != nil {
		fmt.Fprintf(os.Stderr, "stopping the test environment: %v\n", err)
		code = 1
	}
	if err := matrix.write(); err != nil {
		fmt.Fprintf(os.Stderr, "writing the result matrix: %v\n", err)
		code = 1
	}
	return code
}

// recorder collects client results while the tests run.
type recorder struct {
	mu      sync.Mutex
	clients []*ClientResult
}

// client adds a client to the matrix.
func (r *recorder) client(name, version, source string) *ClientResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := &ClientResult{
		Name:    name,
		Version: version,
		Source:  source,
		Results: map[Operation]string{},
	}
	r.clients = append(r.clients, c)
	return c
}

// step runs one operation of a client as a subtest named after it and
// records its result.
func (r *recorder) step(t *testing.T, c *ClientResult, op Operation, test func(t *testing.T)) bool {
	t.Helper()
	passed := t.Run(string(op), test)
	if passed {
		r.set(c, op, ResultPass)
	} else {
		r.set(c, op, ResultFail)
	}
	return passed
}

func (r *recorder) set(c *ClientResult, op Operation, result string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c.Results[op] = result
}

// note records a client quirk that a test has just checked.
func (r *recorder) note(c *ClientResult, text string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c.Notes = append(c.Notes, text)
}

// write saves the matrix to results/clients/matrix.json at the repository
// root, two levels above this package. A run that tested no client, such
// as one filtered by -run to a helper test, leaves the file alone.
func (r *recorder) write() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.clients) == 0 {
		return nil
	}
	dir, err := filepath.Abs(filepath.Join("..", "..", "results", "clients"))
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return Matrix{Clients: r.clients}.WriteFile(filepath.Join(dir, "matrix.json"))
}
