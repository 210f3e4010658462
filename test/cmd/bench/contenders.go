package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"time"
)

// The contenders, in the order of the tables.
const (
	contenderDirect      = "direct"
	contenderDirectTLS   = "direct-tls"
	contenderNginx       = "nginx"
	contenderNginxTuned  = "nginx-tuned"
	contenderCaddy       = "caddy"
	contenderModule      = "module"
	contenderModuleSplit = "module-split"
	// contenderCandidate is the module built from a modified copy of the
	// repository (-candidate-caddy), to measure a proposed change against
	// the module as it is, in the same interleaved run.
	contenderCandidate = "candidate"
)

var allContenders = []string{
	contenderDirect, contenderDirectTLS, contenderNginx, contenderNginxTuned,
	contenderCaddy, contenderModule, contenderModuleSplit, contenderCandidate,
}

// contender is one way for the client to reach the upstreams: directly
// or through one proxy process with two sites, one in front of the fast
// upstream and one in front of the registry.
type contender struct {
	name        string
	blobURL     string
	registryURL string
	// h2 is false for plain HTTP, which the client speaks as HTTP/1.1 only
	h2 bool

	proc *process
	// adminAddr is Caddy's admin endpoint, for profiles
	adminAddr string
	// startRSS is the resident size of the proxy right after it started
	startRSS int64
}

// pids returns the processes of the proxy (an nginx master and its
// workers), or none for a direct contender.
func (c *contender) pids() []int {
	if c.proc == nil {
		return nil
	}
	return processTree(c.proc.pid())
}

// serverSet is what the contenders front: the fast upstream and the
// registry, each with a plain, a second plain (push) and a TLS listener.
type serverSet struct {
	upstream upstreamAddrs
	registry upstreamAddrs
}

// proxyPorts are the two loopback ports of one proxy.
type proxyPorts struct {
	Blob, Registry int
}

func newProxyPorts() (proxyPorts, error) {
	blob, err := freePort()
	if err != nil {
		return proxyPorts{}, err
	}
	registry, err := freePort()
	if err != nil {
		return proxyPorts{}, err
	}
	return proxyPorts{Blob: blob, Registry: registry}, nil
}

func (p proxyPorts) contender(name string) *contender {
	return &contender{
		name:        name,
		blobURL:     "https://127.0.0.1:" + strconv.Itoa(p.Blob),
		registryURL: "https://127.0.0.1:" + strconv.Itoa(p.Registry),
		h2:          true,
	}
}

// nginxConfig is the classic registry proxy: TLS with HTTP/2, no body
// size limit, chunked uploads, forwarded headers, a 900 s read timeout,
// the API version header on every response and the rejection of Docker
// 1.5 and older. Everything else is at nginx's built-in defaults, except
// worker_processes, which Debian's nginx.conf sets to auto.
//
// Tuned adds what the nginx documentation suggests for large transfers:
// HTTP/1.1 with keep-alive to the upstream, unbuffered requests and
// responses, and larger proxy buffers.
var nginxConfig = template.Must(template.New("nginx").Parse(`# written by the caddy-docker-registry benchmark
worker_processes auto;
daemon off;
pid {{.Dir}}/nginx.pid;

events {
}

http {
    access_log {{.Dir}}/access.log;
    client_body_temp_path {{.Dir}}/client_body_temp;
    proxy_temp_path {{.Dir}}/proxy_temp;
    fastcgi_temp_path {{.Dir}}/fastcgi_temp;
    uwsgi_temp_path {{.Dir}}/uwsgi_temp;
    scgi_temp_path {{.Dir}}/scgi_temp;

    # an upstream that sends no API version gets the default one; one that
    # sends it keeps its own, and add_header then adds nothing
    map $upstream_http_docker_distribution_api_version $docker_distribution_api_version {
        "" "registry/2.0";
    }
{{range .Sites}}{{if $.Tuned}}
    upstream {{.Name}} {
        server {{.Upstream}};
        keepalive 32;
    }
{{end}}
    server {
        listen 127.0.0.1:{{.Port}} ssl http2;
        server_name localhost;

        ssl_certificate {{$.Cert}};
        ssl_certificate_key {{$.Key}};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305;

        client_max_body_size 0;
        chunked_transfer_encoding on;

        location /v2/ {
            # Docker 1.5 and older, and the bare "Go " agent they used
            if ($http_user_agent ~ "^(docker\/1\.(3|4|5(?!\.[0-9]-dev))|Go ).*$") {
                return 404;
            }
            add_header Docker-Distribution-Api-Version $docker_distribution_api_version always;

            proxy_pass http://{{if $.Tuned}}{{.Name}}{{else}}{{.Upstream}}{{end}};
            proxy_set_header Host $http_host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_read_timeout 900;
{{- if $.Tuned}}

            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_request_buffering off;
            proxy_buffering off;
            proxy_buffer_size 128k;
            proxy_buffers 8 128k;
            proxy_busy_buffers_size 256k;
{{- end}}
        }
    }
{{end}}}
`))

type nginxSite struct {
	Name     string
	Port     int
	Upstream string
}

// startNginx runs nginx in the foreground with its prefix, configuration,
// logs, pid file and temporary files in a directory of its own.
func startNginx(ctx context.Context, sup *supervisor, nginxPath, workDir, name string, tuned bool, certs certFiles, servers serverSet) (*contender, error) {
	dir := filepath.Join(workDir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	// when nginx starts as root, its workers run as the user "nobody",
	// and they write request bodies and buffered responses below dir
	if err := os.Chmod(workDir, 0o755); err != nil {
		return nil, err
	}
	ports, err := newProxyPorts()
	if err != nil {
		return nil, err
	}
	data := struct {
		Dir, Cert, Key string
		Tuned          bool
		Sites          []nginxSite
	}{
		Dir: dir, Cert: certs.Cert, Key: certs.Key, Tuned: tuned,
		Sites: []nginxSite{
			{Name: "blob_upstream", Port: ports.Blob, Upstream: servers.upstream.Plain},
			{Name: "registry_upstream", Port: ports.Registry, Upstream: servers.registry.Plain},
		},
	}
	confPath := filepath.Join(dir, "nginx.conf")
	if err := writeTemplate(confPath, nginxConfig, data); err != nil {
		return nil, err
	}

	check := exec.CommandContext(ctx, nginxPath, "-t", "-q", "-p", dir, "-c", confPath, "-e", filepath.Join(dir, "error.log"))
	if out, err := check.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("nginx rejected %s: %v\n%s", confPath, err, out)
	}
	cmd := exec.Command(nginxPath, "-p", dir, "-c", confPath, "-e", filepath.Join(dir, "error.log"))
	proc, err := sup.start(name, filepath.Join(dir, "stderr.log"), cmd)
	if err != nil {
		return nil, err
	}
	c := ports.contender(name)
	c.proc = proc
	return c, waitForProxy(ctx, c, ports, certs)
}

// caddyConfig keeps Caddy on loopback and inside the run's directory:
// admin on a loopback port, storage in dir, no HTTP redirect listener, no
// trust store changes, and no HTTP/3, which nginx is not set up for
// either. TLS comes from the same files as nginx's.
var caddyConfig = template.Must(template.New("caddy").Parse(`# written by the caddy-docker-registry benchmark
{
	admin 127.0.0.1:{{.AdminPort}}
	persist_config off
	storage file_system {{.Dir}}/data
	auto_https disable_redirects
	skip_install_trust
{{- range .GlobalOptions}}
	{{.}}
{{- end}}
	servers {
		protocols h1 h2
{{- range .ServerOptions}}
		{{.}}
{{- end}}
	}
}
{{range .Sites}}
https://127.0.0.1:{{.Port}} {
	bind 127.0.0.1
	tls {{$.Cert}} {{$.Key}}
{{.Body}}
}
{{end}}`))

// caddyStockSite is stock reverse_proxy set up like the nginx
// configuration: only /v2 is proxied, old Docker clients get 404, every
// response carries the API version header, HTTP/1.1 to the upstream
// without transparent compression, a 900 s read timeout and X-Real-IP.
// Go's RE2 has no lookahead, so the "1.5 except 1.5.x-dev" rule is a
// second matcher.
const caddyStockSite = `	@v2 path /v2 /v2/*
	handle @v2 {
		@old_docker {
			header_regexp User-Agent "^(docker/1\.(3|4|5)|Go )"
			not header_regexp User-Agent ^docker/1\.5\.[0-9]-dev
		}
		respond @old_docker 404
		header ?Docker-Distribution-Api-Version registry/2.0
		reverse_proxy {{UPSTREAM}} {
			header_up X-Real-IP {remote_host}
			transport http {
				versions 1.1
				compression off
				read_timeout 900s
			}
		}
	}`

type caddySite struct {
	Port int
	Body string
}

// caddyOptions are what the run passes to every Caddy process.
type caddyOptions struct {
	stockBinary  string
	moduleBinary string
	// candidateBinary and candidateEnv are for the candidate contender,
	// which otherwise runs like the module
	candidateBinary        string
	candidateEnv           []string
	candidateGlobalOptions []string
	// env entries such as GOGC=200, added to every Caddy process
	env []string
	// globalOptions are extra lines of the global options block
	globalOptions []string
	// serverOptions are lines inside the global servers block
	serverOptions []string
}

// startCaddy runs one Caddy process for a contender: stock reverse_proxy,
// or docker_registry with one upstream or with separate pull and push
// upstreams.
func startCaddy(ctx context.Context, sup *supervisor, opts caddyOptions, workDir, name string, certs certFiles, servers serverSet) (*contender, error) {
	dir := filepath.Join(workDir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	ports, err := newProxyPorts()
	if err != nil {
		return nil, err
	}
	adminPort, err := freePort()
	if err != nil {
		return nil, err
	}

	site := func(up upstreamAddrs) string {
		switch name {
		case contenderCaddy:
			return strings.ReplaceAll(caddyStockSite, "{{UPSTREAM}}", up.Plain)
		case contenderModuleSplit:
			return "\tdocker_registry {\n\t\tpull " + up.Plain + "\n\t\tpush " + up.Push + "\n\t}"
		}
		return "\tdocker_registry " + up.Plain
	}
	globalOptions := opts.globalOptions
	if name == contenderCandidate {
		globalOptions = append(slices.Clone(globalOptions), opts.candidateGlobalOptions...)
	}
	data := struct {
		Dir, Cert, Key string
		AdminPort      int
		GlobalOptions  []string
		ServerOptions  []string
		Sites          []caddySite
	}{
		Dir: dir, Cert: certs.Cert, Key: certs.Key, AdminPort: adminPort,
		GlobalOptions: globalOptions,
		ServerOptions: opts.serverOptions,
		Sites: []caddySite{
			{Port: ports.Blob, Body: site(servers.upstream)},
			{Port: ports.Registry, Body: site(servers.registry)},
		},
	}
	confPath := filepath.Join(dir, "Caddyfile")
	if err := writeTemplate(confPath, caddyConfig, data); err != nil {
		return nil, err
	}

	binary := opts.moduleBinary
	switch name {
	case contenderCaddy:
		binary = opts.stockBinary
	case contenderCandidate:
		binary = opts.candidateBinary
	}
	cmd := exec.Command(binary, "run", "--config", confPath, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	cmd.Env = append(cmd.Env, opts.env...)
	if name == contenderCandidate {
		cmd.Env = append(cmd.Env, opts.candidateEnv...)
	}
	proc, err := sup.start(name, filepath.Join(dir, "caddy.log"), cmd)
	if err != nil {
		return nil, err
	}
	c := ports.contender(name)
	c.proc = proc
	c.adminAddr = "127.0.0.1:" + strconv.Itoa(adminPort)
	return c, waitForProxy(ctx, c, ports, certs)
}

// waitForProxy waits until both sites of the proxy complete a TLS
// handshake, then records its resident size.
func waitForProxy(ctx context.Context, c *contender, ports proxyPorts, certs certFiles) error {
	for _, port := range []int{ports.Blob, ports.Registry} {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if err := waitForTLS(ctx, addr, certs.CA); err != nil {
			select {
			case <-c.proc.done:
				return fmt.Errorf("%s exited at start (%v); its stderr is in %s (kept with -keep)", c.name, c.proc.err, c.proc.logPath)
			default:
			}
			return fmt.Errorf("%s: %v", c.name, err)
		}
	}
	// let nginx finish forking its workers
	time.Sleep(200 * time.Millisecond)
	rss, err := memoryStatus(c.pids(), "VmRSS")
	if err != nil {
		return err
	}
	c.startRSS = rss
	return nil
}

// startServers starts the fast upstream and the registry.
func startServers(ctx context.Context, sup *supervisor, self, workDir string, certs certFiles, layers int, layerSize int64) (serverSet, []*process, error) {
	var set serverSet
	upstream, err := sup.start("upstream", filepath.Join(workDir, "upstream.log"),
		exec.Command(self, "upstream", "-cert", certs.Cert, "-key", certs.Key))
	if err != nil {
		return set, nil, err
	}
	if err := readAddrs(upstream, &set.upstream, 30*time.Second); err != nil {
		return set, nil, err
	}
	registry, err := sup.start("registry", filepath.Join(workDir, "registry.log"),
		exec.Command(self, "registry", "-cert", certs.Cert, "-key", certs.Key,
			"-layers", strconv.Itoa(layers), "-layer-size", strconv.FormatInt(layerSize, 10)))
	if err != nil {
		return set, nil, err
	}
	if err := readAddrs(registry, &set.registry, 5*time.Minute); err != nil {
		return set, nil, err
	}
	return set, []*process{upstream, registry}, nil
}

func (s serverSet) directContenders() []*contender {
	return []*contender{
		{name: contenderDirect, blobURL: "http://" + s.upstream.Plain, registryURL: "http://" + s.registry.Plain},
		{name: contenderDirectTLS, blobURL: "https://" + s.upstream.TLS, registryURL: "https://" + s.registry.TLS, h2: true},
	}
}

func writeTemplate(path string, t *template.Template, data any) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := t.Execute(f, data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
