package dockerregistry

import (
	"encoding/json"
	"fmt"
	"strings"
)

// defaultReadTimeout matches nginx's proxy_read_timeout 900 of the classic
// registry proxy: Nexus may take minutes to checksum or scan a layer
// before it responds to the final PUT of an upload.
const defaultReadTimeout = "900s"

// defaultWriteBufferSize holds one whole chunk of a chunked upload: up to
// 32 KiB of data, which is what Go's transport reads from the client per
// chunk, with its size line and CRLF. With the transport's default of
// 4 KiB, net/http writes each chunk as three system calls: 4 KiB, the
// rest, and the CRLF with a flush. With this size it writes one.
const defaultWriteBufferSize = "33792"

// withProxyDefaults fills in registry-friendly settings for a nested
// reverse_proxy, leaving every setting the user made as it is:
//
//   - transport http with versions ["1.1"]: registries are tuned for
//     HTTP/1.1 and Nexus connectors speak nothing else;
//   - compression false: the transport would otherwise ask for gzip on
//     the client's behalf and decompress, which drops Content-Length and
//     breaks digest checks;
//   - read_timeout 900s, see defaultReadTimeout;
//   - write_buffer_size 33 KiB, see defaultWriteBufferSize (measured in
//     BENCHMARKS.md: 17 to 22% less CPU per GiB of chunked PATCH);
//   - keep_alive max_idle_conns_per_host 256: with reverse_proxy's
//     default of 32, bursts of manifest and blob HEAD requests at higher
//     concurrency open new upstream connections (measured in
//     BENCHMARKS.md: 8 to 21% more requests per second at 64 clients);
//   - X-Forwarded-Host without the port: Nexus 3.77 to 3.80 append the
//     port again and advertise host:8083:8083.
//
// Handlers other than reverse_proxy are returned unchanged.
func withProxyDefaults(raw json.RawMessage) (json.RawMessage, error) {
	var proxy map[string]json.RawMessage
	if err := json.Unmarshal(raw, &proxy); err != nil {
		return nil, fmt.Errorf("decoding proxy handler: %v", err)
	}
	var name string
	if err := json.Unmarshal(proxy["handler"], &name); err != nil || name != "reverse_proxy" {
		return raw, nil
	}

	transport, err := transportDefaults(proxy["transport"])
	if err != nil {
		return nil, err
	}
	if transport != nil {
		proxy["transport"] = transport
	}

	headers, err := forwardedHostDefault(proxy["headers"])
	if err != nil {
		return nil, err
	}
	proxy["headers"] = headers

	return json.Marshal(proxy)
}

// transportDefaults returns the transport with defaults filled in, or nil
// to keep a transport of another protocol (fastcgi, say) unchanged.
func transportDefaults(raw json.RawMessage) (json.RawMessage, error) {
	transport := map[string]json.RawMessage{"protocol": json.RawMessage(`"http"`)}
	if raw != nil {
		transport = nil
		if err := json.Unmarshal(raw, &transport); err != nil {
			return nil, fmt.Errorf("decoding proxy transport: %v", err)
		}
		var protocol string
		_ = json.Unmarshal(transport["protocol"], &protocol)
		if protocol != "http" {
			return nil, nil
		}
	}
	setIfAbsent(transport, "versions", `["1.1"]`)
	setIfAbsent(transport, "compression", `false`)
	setIfAbsent(transport, "read_timeout", `"`+defaultReadTimeout+`"`)
	setIfAbsent(transport, "write_buffer_size", defaultWriteBufferSize)
	keepAlive, err := keepAliveDefaults(transport["keep_alive"])
	if err != nil {
		return nil, err
	}
	transport["keep_alive"] = keepAlive
	return json.Marshal(transport)
}

// keepAliveDefaults sets max_idle_conns_per_host to 256 unless the user
// set it, and keeps every other keep_alive setting, such as the idle
// timeout that the Caddyfile's "keepalive" subdirective sets.
func keepAliveDefaults(raw json.RawMessage) (json.RawMessage, error) {
	keepAlive := map[string]json.RawMessage{}
	if raw != nil {
		if err := json.Unmarshal(raw, &keepAlive); err != nil {
			return nil, fmt.Errorf("decoding proxy keep_alive: %v", err)
		}
	}
	setIfAbsent(keepAlive, "max_idle_conns_per_host", "256")
	return json.Marshal(keepAlive)
}

// forwardedHostDefault adds a replace operation that strips the port from
// X-Forwarded-Host, unless the user configured that header themselves.
// reverse_proxy applies these operations after it sets the X-Forwarded
// headers, so the operation receives the value that would be sent.
func forwardedHostDefault(raw json.RawMessage) (json.RawMessage, error) {
	if raw != nil && strings.Contains(strings.ToLower(string(raw)), "x-forwarded-host") {
		return raw, nil
	}
	headers := map[string]map[string]json.RawMessage{}
	if raw != nil {
		if err := json.Unmarshal(raw, &headers); err != nil {
			return nil, fmt.Errorf("decoding proxy headers: %v", err)
		}
	}
	request := headers["request"]
	if request == nil {
		request = map[string]json.RawMessage{}
	}
	replace := map[string]json.RawMessage{}
	if request["replace"] != nil {
		if err := json.Unmarshal(request["replace"], &replace); err != nil {
			return nil, fmt.Errorf("decoding proxy header replacements: %v", err)
		}
	}
	// the host is a reg-name, an IPv4 address or a bracketed IPv6 literal;
	// the port is the trailing :digits outside brackets
	replace["X-Forwarded-Host"] = json.RawMessage(`[{"search_regexp":"^(\\[[^\\]]*\\]|[^:]*):[0-9]*$","replace":"$1"}]`)
	var err error
	if request["replace"], err = json.Marshal(replace); err != nil {
		return nil, err
	}
	headers["request"] = request
	return json.Marshal(headers)
}

func setIfAbsent(m map[string]json.RawMessage, key, value string) {
	if _, ok := m[key]; !ok {
		m[key] = json.RawMessage(value)
	}
}
