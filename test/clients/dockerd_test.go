package clients

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// dockerEngine is a dockerd that the test starts as root, with every
// state directory in a temporary directory, no networking setup, and the
// vfs storage driver.
//
// dockerd reads registry CAs only from /etc/docker/certs.d/<host:port>/
// (Docker 20.10 moves it only in rootless mode, under RootlessKit), and it
// does not verify TLS at all for a registry whose name resolves into
// 127.0.0.0/8, which it always counts as an insecure registry. So dockerd
// runs in its own mount namespace, where a directory of the test is
// mounted over /etc/docker and a hosts file over /etc/hosts that resolves
// registryName to ::1 only. Nothing of the host's /etc changes, and TLS is
// verified as it is for a user's registry. The CLI runs in the same
// namespace, because docker manifest reaches the registry from the CLI.
type dockerEngine struct {
	command
	dir      string
	certsDir string
	socket   string
	cmd      *exec.Cmd
	exited   chan struct{}
}

// dockerStartTimeout bounds dockerd's start, which takes about a second.
const dockerStartTimeout = time.Minute

func startDockerEngine(t *testing.T) *dockerEngine {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("the Docker test starts its own dockerd, which needs root: run the tests as root, as CI does")
	}
	dockerd := requireBinary(t, "dockerd", "docker.io")
	cli := dockerCLI(t, dockerd)
	unshare := requireBinary(t, "unshare", "util-linux")
	nsenter := requireBinary(t, "nsenter", "util-linux")
	if info, err := os.Stat("/etc/docker"); err != nil || !info.IsDir() {
		t.Fatalf("/etc/docker is not a directory (%v): the docker.io package creates it, and the test mounts its own directory over it", err)
	}

	// a short path, because the sockets under it must fit in sun_path
	dir, err := os.MkdirTemp("", "dockerd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("removing dockerd's directory: %v", err)
		}
	})
	d := &dockerEngine{
		dir:      dir,
		certsDir: mkdir(t, filepath.Join(dir, "etc-docker", "certs.d")),
		socket:   filepath.Join(dir, "docker.sock"),
		exited:   make(chan struct{}),
	}
	hosts := filepath.Join(dir, "hosts")
	writeFile(t, hosts, "127.0.0.1 localhost\n::1 "+registryName+"\n")
	// an empty configuration file, so that dockerd reads no system one
	daemonConfig := filepath.Join(dir, "daemon.json")
	writeFile(t, daemonConfig, "{}\n")

	// dockerd would use a system containerd whose socket exists, so a
	// tmpfs hides /run/containerd and dockerd starts its own under
	// --exec-root
	const script = `mount --bind "$1" /etc/docker && mount --bind "$2" /etc/hosts &&
{ [ ! -d /run/containerd ] || mount -t tmpfs tmpfs /run/containerd; } && shift 2 && exec "$@"`
	args := []string{"--mount", "--propagation", "private", "sh", "-c", script, "sh",
		filepath.Join(dir, "etc-docker"), hosts,
		dockerd,
		"--config-file", daemonConfig,
		"--data-root", filepath.Join(dir, "data"),
		"--exec-root", filepath.Join(dir, "exec"),
		"--pidfile", filepath.Join(dir, "dockerd.pid"),
		"--host", "unix://" + d.socket,
		"--storage-driver", "vfs",
		"--bridge", "none",
		"--iptables=false",
		"--ip-forward=false",
		"--ip-masq=false",
		"--userland-proxy=false",
	}
	logFile, err := os.Create(filepath.Join(dir, "dockerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	// unshare and sh exec the next program, so the process is dockerd
	d.cmd = exec.Command(unshare, args...)
	d.cmd.Env = cleanEnv("HOME=" + mkdir(t, filepath.Join(dir, "home")))
	d.cmd.Stdout, d.cmd.Stderr = logFile, logFile
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("starting dockerd: %v", err)
	}
	go func() {
		_ = d.cmd.Wait()
		close(d.exited)
	}()
	t.Cleanup(func() { d.stop(t) })

	d.command = command{
		program: cli,
		prefix:  []string{nsenter, "--target", strconv.Itoa(d.cmd.Process.Pid), "--mount", "--"},
		env: cleanEnv(
			"DOCKER_HOST=unix://"+d.socket,
			"DOCKER_CONFIG="+mkdir(t, filepath.Join(dir, "cli")),
			"HOME="+filepath.Join(dir, "home"),
		),
	}
	d.waitReady(t)

	// with the empty configuration file, dockerd has no registry mirror
	// that could send a pull elsewhere
	if mirrors := strings.TrimSpace(d.mustRun(t, "info", "--format", "{{json .RegistryConfig.Mirrors}}")); mirrors != "[]" && mirrors != "null" {
		t.Fatalf("dockerd registry mirrors: got %s, want none", mirrors)
	}
	return d
}

// dockerCLI returns the docker CLI of the package that installed dockerd:
// Debian's docker.io has /usr/sbin/dockerd and /usr/bin/docker, Docker's
// own packages have both in /usr/bin. Another docker earlier in PATH, such
// as a newer static CLI in /usr/local/bin, would test a different client.
func dockerCLI(t *testing.T, dockerd string) string {
	t.Helper()
	dir := filepath.Dir(dockerd)
	candidates := []string{filepath.Join(dir, "docker")}
	if filepath.Base(dir) == "sbin" {
		candidates = append(candidates, filepath.Join(filepath.Dir(dir), "bin", "docker"))
	}
	for _, candidate := range candidates {
		if info, err := os.Stat(candidate); err == nil && info.Mode().IsRegular() && info.Mode()&0o111 != 0 {
			return candidate
		}
	}
	return requireBinary(t, "docker", "docker.io")
}

// waitReady returns once GET /_ping succeeds, and fails the test when
// dockerd exits or does not respond in time.
func (d *dockerEngine) waitReady(t *testing.T) {
	t.Helper()
	transport := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", d.socket)
	}}
	defer transport.CloseIdleConnections()
	client := &http.Client{Transport: transport, Timeout: 2 * time.Second}

	deadline := time.After(dockerStartTimeout)
	for {
		response, err := client.Get("http://docker/_ping")
		if err == nil {
			response.Body.Close()
			if response.StatusCode == http.StatusOK {
				return
			}
			err = fmt.Errorf("status %d", response.StatusCode)
		}
		select {
		case <-d.exited:
			t.Fatalf("dockerd exited during start:\n%s", d.logTail())
		case <-deadline:
			t.Fatalf("dockerd did not answer /_ping within %s (%v):\n%s", dockerStartTimeout, err, d.logTail())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stop ends dockerd with SIGTERM, as its service manager does, and kills
// it when it does not exit in time. dockerd stops its containerd itself.
func (d *dockerEngine) stop(t *testing.T) {
	select {
	case <-d.exited:
	default:
		if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
			t.Errorf("stopping dockerd: %v", err)
		}
		select {
		case <-d.exited:
		case <-time.After(30 * time.Second):
			t.Errorf("dockerd did not exit within 30s of SIGTERM; killing it")
			_ = d.cmd.Process.Kill()
			<-d.exited
		}
	}
	if t.Failed() {
		t.Logf("dockerd log:\n%s", d.logTail())
	}
}

// logTail returns the end of dockerd's log.
func (d *dockerEngine) logTail() string {
	b, err := os.ReadFile(filepath.Join(d.dir, "dockerd.log"))
	if err != nil {
		return err.Error()
	}
	const keep = 4000
	if len(b) > keep {
		b = b[len(b)-keep:]
	}
	return string(b)
}

// trust installs Caddy's root CA for registryName:<port> as Docker's
// documentation describes it, in certs.d/<host:port>/ca.crt. dockerd reads
// the directory on every connection to a registry, so no restart is needed.
func (d *dockerEngine) trust(t *testing.T, port int) {
	t.Helper()
	dir := mkdir(t, filepath.Join(d.certsDir, fmt.Sprintf("%s:%d", registryName, port)))
	copyFile(t, env.rootCert, filepath.Join(dir, "ca.crt"))
}

// version returns the CLI and engine versions.
func (d *dockerEngine) version(t *testing.T) string {
	t.Helper()
	output := strings.TrimSpace(d.mustRun(t, "version", "--format", "{{.Client.Version}} {{.Server.Version}}"))
	cli, engine, _ := strings.Cut(output, " ")
	if cli == engine {
		return cli
	}
	return fmt.Sprintf("(CLI %s, engine %s)", cli, engine)
}
