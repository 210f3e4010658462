package dockerregistry

import (
	"encoding/json"
	"testing"
)

func TestProxyDefaultsKeepUserTransport(t *testing.T) {
	cases := []struct {
		name        string
		in          string
		keepAlive   string
		writeBuffer string
	}{
		{"no transport", `{"handler":"reverse_proxy"}`, `{"max_idle_conns_per_host":256}`, "33792"},
		{"user keep_alive kept", `{"handler":"reverse_proxy","transport":{"protocol":"http","keep_alive":{"max_idle_conns_per_host":8}}}`, `{"max_idle_conns_per_host":8}`, "33792"},
		{"user idle timeout merged", `{"handler":"reverse_proxy","transport":{"protocol":"http","keep_alive":{"idle_timeout":30000000000}}}`, `{"idle_timeout":30000000000,"max_idle_conns_per_host":256}`, "33792"},
		{"user write buffer kept", `{"handler":"reverse_proxy","transport":{"protocol":"http","write_buffer_size":8192}}`, `{"max_idle_conns_per_host":256}`, "8192"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, err := withProxyDefaults(json.RawMessage(c.in))
			if err != nil {
				t.Fatal(err)
			}
			var proxy struct {
				Transport map[string]json.RawMessage `json:"transport"`
			}
			if err := json.Unmarshal(out, &proxy); err != nil {
				t.Fatal(err)
			}
			if got := string(proxy.Transport["keep_alive"]); got != c.keepAlive {
				t.Errorf("keep_alive: got %s, want %s", got, c.keepAlive)
			}
			if got := string(proxy.Transport["write_buffer_size"]); got != c.writeBuffer {
				t.Errorf("write_buffer_size: got %s, want %s", got, c.writeBuffer)
			}
			if got := string(proxy.Transport["versions"]); got != `["1.1"]` {
				t.Errorf("versions: got %s, want [\"1.1\"]", got)
			}
			if got := string(proxy.Transport["compression"]); got != `false` {
				t.Errorf("compression: got %s, want false", got)
			}
		})
	}
}
