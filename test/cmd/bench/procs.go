package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// supervisor starts every server and client of a run in its own process
// group and kills those groups when the run ends, fails or is
// interrupted, so that nothing outlives the orchestrator.
type supervisor struct {
	mu      sync.Mutex
	procs   []*process
	stopped bool
}

type process struct {
	name    string
	logPath string
	cmd     *exec.Cmd
	stdout  *bufio.Reader
	stdin   io.WriteCloser
	done    chan struct{}
	err     error
}

// start runs cmd in a new process group, with stderr appended to logPath.
// The child also gets SIGKILL if the orchestrator dies without cleaning
// up (Linux parent-death signal).
func (s *supervisor) start(name, logPath string, cmd *exec.Cmd) (*process, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil, errors.New("the run is stopping")
	}
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		logFile.Close()
		return nil, err
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		logFile.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting %s: %v", name, err)
	}
	p := &process{name: name, logPath: logPath, cmd: cmd, stdout: bufio.NewReader(stdout), stdin: stdin, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	s.procs = append(s.procs, p)
	return p, nil
}

// stopAll kills every process group that is still running: SIGTERM,
// then SIGKILL after two seconds.
func (s *supervisor) stopAll() {
	s.mu.Lock()
	s.stopped = true
	procs := s.procs
	s.procs = nil
	s.mu.Unlock()
	for _, p := range procs {
		p.signalGroup(syscall.SIGTERM)
	}
	deadline := time.After(2 * time.Second)
	for _, p := range procs {
		select {
		case <-p.done:
		case <-deadline:
		}
		// workers of nginx may outlive their master; kill the group anyway
		p.signalGroup(syscall.SIGKILL)
	}
}

// stop kills one process group and removes it from the supervisor.
func (s *supervisor) stop(p *process) {
	p.signalGroup(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(2 * time.Second):
	}
	p.signalGroup(syscall.SIGKILL)
	<-p.done
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, q := range s.procs {
		if q == p {
			s.procs = append(s.procs[:i], s.procs[i+1:]...)
			break
		}
	}
}

func (p *process) signalGroup(sig syscall.Signal) {
	if p.cmd.Process != nil {
		// the process group id is the leader's pid, because of Setpgid
		syscall.Kill(-p.cmd.Process.Pid, sig)
	}
}

func (p *process) pid() int { return p.cmd.Process.Pid }

// readLine returns the next line that the process prints on stdout, or
// an error when it exits or timeout passes first.
func (p *process) readLine(timeout time.Duration) (string, error) {
	type lineResult struct {
		line string
		err  error
	}
	ch := make(chan lineResult, 1)
	go func() {
		line, err := p.stdout.ReadString('\n')
		ch <- lineResult{strings.TrimSpace(line), err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			<-p.done
			return "", fmt.Errorf("%s exited before it printed a line (%v); its stderr is in %s (kept with -keep)", p.name, p.err, p.logPath)
		}
		return r.line, nil
	case <-time.After(timeout):
		return "", fmt.Errorf("%s printed nothing within %s", p.name, timeout)
	}
}

// waitForTLS returns once addr completes a TLS handshake that the
// benchmark CA verifies.
func waitForTLS(ctx context.Context, addr, caPath string) error {
	roots, err := clientRoots(caPath)
	if err != nil {
		return err
	}
	dialer := &tls.Dialer{NetDialer: &net.Dialer{Timeout: time.Second}, Config: &tls.Config{RootCAs: roots}}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		conn, err := dialer.DialContext(ctx, "tcp", addr)
		if err == nil {
			return conn.Close()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no TLS handshake with %s: %v", addr, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// freePort returns a loopback port that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// userHZ is the unit of utime and stime in /proc/<pid>/stat: USER_HZ,
// 100 on every Linux architecture that Go supports.
const userHZ = 100

// cpuSeconds sums user and system CPU time of the processes.
func cpuSeconds(pids []int) (float64, error) {
	var ticks int64
	for _, pid := range pids {
		fields, err := statFields(pid)
		if err != nil {
			return 0, err
		}
		// fields after the command name: state is index 0, so utime
		// (field 14 of proc(5)) is index 11 and stime index 12
		utime, _ := strconv.ParseInt(fields[11], 10, 64)
		stime, _ := strconv.ParseInt(fields[12], 10, 64)
		ticks += utime + stime
	}
	return float64(ticks) / userHZ, nil
}

// statFields returns the fields of /proc/<pid>/stat after the command
// name, which may itself contain spaces.
func statFields(pid int) ([]string, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil, err
	}
	text := string(data)
	end := strings.LastIndexByte(text, ')')
	if end < 0 {
		return nil, fmt.Errorf("unexpected /proc/%d/stat: %q", pid, text)
	}
	return strings.Fields(text[end+1:]), nil
}

// processTree returns pid and its direct children, such as an nginx
// master and its workers.
func processTree(pid int) []int {
	pids := []int{pid}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return pids
	}
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil || child == pid {
			continue
		}
		fields, err := statFields(child)
		if err != nil || len(fields) < 2 {
			continue
		}
		if parent, _ := strconv.Atoi(fields[1]); parent == pid {
			pids = append(pids, child)
		}
	}
	return pids
}

// resetPeakRSS sets VmHWM back to the current resident size (value 5 of
// /proc/<pid>/clear_refs, Linux 4.0 and later).
func resetPeakRSS(pids []int) error {
	for _, pid := range pids {
		if err := os.WriteFile("/proc/"+strconv.Itoa(pid)+"/clear_refs", []byte("5"), 0); err != nil {
			return err
		}
	}
	return nil
}

// memoryStatus sums a size field of /proc/<pid>/status (VmHWM, VmRSS)
// over the processes, in bytes.
func memoryStatus(pids []int, field string) (int64, error) {
	var total int64
	for _, pid := range pids {
		data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
		if err != nil {
			return 0, err
		}
		for line := range strings.Lines(string(data)) {
			rest, ok := strings.CutPrefix(line, field+":")
			if !ok {
				continue
			}
			kib, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parsing %s of process %d: %v", field, pid, err)
			}
			total += kib << 10
		}
	}
	return total, nil
}

// loadAverages returns the first three fields of /proc/loadavg.
func loadAverages() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	fields := strings.Fields(string(data))
	if len(fields) < 3 {
		return "unknown"
	}
	return strings.Join(fields[:3], " ")
}
