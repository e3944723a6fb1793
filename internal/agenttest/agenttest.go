// Package agenttest starts real `cleanroom agent` processes and a real
// nats-server, and talks to the agent's HTTP API, for the end-to-end tests
// and the jobs-per-minute benchmark. Functions return errors rather than
// take a testing.T so the benchmark program can use them too.
package agenttest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cleanroom-ci/cleanroom/agent/jobs"
	"github.com/cleanroom-ci/cleanroom/internal/clitest"
)

// FreePort returns a loopback port nobody listens on now.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// NATS is a nats-server process with JetStream, built from the module the
// agent embeds, standing in for a team's NATS cluster.
type NATS struct {
	URL  string
	Port int
	cmd  *exec.Cmd
}

// BuildNATSServer builds the nats-server binary into dir.
func BuildNATSServer(dir string) (string, error) {
	out := filepath.Join(dir, "nats-server")
	cmd := exec.Command("go", "build", "-o", out, "github.com/nats-io/nats-server/v2")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build nats-server: %v\n%s", err, b)
	}
	return out, nil
}

// StartNATS starts nats-server with JetStream storing in dir, on loopback,
// on port (0: a free one; a restarted server keeps its port so that
// clients reconnect).
func StartNATS(bin, dir string, port int) (*NATS, error) {
	if port == 0 {
		p, err := FreePort()
		if err != nil {
			return nil, err
		}
		port = p
	}
	cmd := exec.Command(bin, "-a", "127.0.0.1", "-p", strconv.Itoa(port), "-js", "-sd", dir)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	n := &NATS{URL: fmt.Sprintf("nats://127.0.0.1:%d", port), Port: port, cmd: cmd}
	if err := waitDial(fmt.Sprintf("127.0.0.1:%d", port), 20*time.Second); err != nil {
		n.Stop()
		return nil, err
	}
	return n, nil
}

// Stop kills the server.
func (n *NATS) Stop() {
	n.cmd.Process.Kill()
	n.cmd.Wait()
}

func waitDial(addr string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("nothing listens on %s after %v", addr, d)
}

// AgentConfig is one agent process.
type AgentConfig struct {
	Binary string
	// Dir holds the agent's config, data dir and log.
	Dir string
	// StateDir, Namespace and Address are the child runs' global flags.
	StateDir, Namespace, Address string
	TokensFile                   string
	NATSURL                      string
	ID                           string
	Concurrency                  int
	// Extra YAML appended to the generated config (webhooks:, jobs:, …).
	Extra string
	// AckWait of the queue; short in tests so failover is quick.
	AckWait time.Duration
	// Port to listen on; 0 picks one. A restarted agent keeps its port.
	Port int
}

// Agent is a running `cleanroom agent`.
type Agent struct {
	Cfg  AgentConfig
	URL  string
	Log  *clitest.LockedBuffer
	cmd  *exec.Cmd
	done chan error
}

// StartAgent writes the config and starts the agent; it returns once
// /readyz answers.
func StartAgent(c AgentConfig) (*Agent, error) {
	if c.Port == 0 {
		p, err := FreePort()
		if err != nil {
			return nil, err
		}
		c.Port = p
	}
	if c.AckWait == 0 {
		c.AckWait = 3 * time.Second
	}
	if c.Concurrency == 0 {
		c.Concurrency = 2
	}
	if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		return nil, err
	}
	cfg := fmt.Sprintf("version: 1\nlisten: 127.0.0.1:%d\ndata_dir: %s\ntokens_file: %s\nconcurrency: %d\nnats: {url: %q, ack_wait: %s}\n%s",
		c.Port, filepath.Join(c.Dir, "data"), c.TokensFile, c.Concurrency, c.NATSURL, c.AckWait, c.Extra)
	cfgPath := filepath.Join(c.Dir, "agent.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	args := []string{"--state-dir", c.StateDir, "--namespace", c.Namespace}
	if c.Address != "" {
		args = append(args, "--containerd-address", c.Address)
	}
	args = append(args, "agent", "--config", cfgPath)
	if c.ID != "" {
		args = append(args, "--id", c.ID)
	}
	a := &Agent{Cfg: c, URL: fmt.Sprintf("http://127.0.0.1:%d", c.Port), Log: &clitest.LockedBuffer{}, done: make(chan error, 1)}
	a.cmd = exec.Command(c.Binary, args...)
	a.cmd.Stdout, a.cmd.Stderr = a.Log, a.Log
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := a.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { a.done <- a.cmd.Wait() }()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-a.done:
			return nil, fmt.Errorf("agent exited at start: %v\n%s", err, a.Log)
		default:
		}
		if resp, err := http.Get(a.URL + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return a, nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	a.Kill()
	return nil, fmt.Errorf("agent not ready after 60s\n%s", a.Log)
}

// Kill SIGKILLs the agent, as a crash would (its children get SIGTERM
// through their parent-death signal).
func (a *Agent) Kill() {
	a.cmd.Process.Signal(syscall.SIGKILL)
	<-a.done
	a.done <- nil
}

// Stop sends SIGTERM (drain) and returns the exit error after the agent
// exits, or an error after timeout.
func (a *Agent) Stop(timeout time.Duration) error {
	a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-a.done:
		a.done <- err
		return err
	case <-time.After(timeout):
		a.cmd.Process.Signal(syscall.SIGKILL)
		return fmt.Errorf("agent did not exit within %v of SIGTERM", timeout)
	}
}

// CreateToken runs `cleanroom agent token create` and returns the secret.
func CreateToken(bin, file, name, scope string) (string, error) {
	out, err := exec.Command(bin, "agent", "token", "create", "--tokens-file", file, "--name", name, "--scope", scope).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return "", fmt.Errorf("token create: %v: %s", err, ee.Stderr)
		}
		return "", err
	}
	return strings.TrimSpace(string(out)), nil
}

// Client calls an agent's API with a token.
type Client struct {
	URL   string
	Token string
}

// Response is an API answer.
type Response struct {
	Status int
	Body   []byte
}

func (r Response) String() string {
	return fmt.Sprintf("HTTP %d: %s", r.Status, bytes.TrimSpace(r.Body))
}

// Do sends a request; body may be nil.
func (c Client) Do(method, path, contentType string, body io.Reader, hdr map[string]string) (Response, error) {
	req, err := http.NewRequest(method, c.URL+path, body)
	if err != nil {
		return Response{}, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return Response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return Response{Status: resp.StatusCode, Body: b}, err
}

// SubmitTarball uploads a source tarball and returns the job ID.
func (c Client) SubmitTarball(tgz []byte, pipeline string) (string, error) {
	path := "/api/v1/jobs"
	if pipeline != "" {
		path += "?pipeline=" + pipeline
	}
	r, err := c.Do("POST", path, "application/gzip", bytes.NewReader(tgz), nil)
	if err != nil {
		return "", err
	}
	if r.Status != http.StatusAccepted {
		return "", fmt.Errorf("submit: %s", r)
	}
	var s struct{ ID string }
	if err := json.Unmarshal(r.Body, &s); err != nil {
		return "", err
	}
	return s.ID, nil
}

// Job fetches a job's state.
func (c Client) Job(id string) (jobs.Job, error) {
	r, err := c.Do("GET", "/api/v1/jobs/"+id, "", nil, nil)
	if err != nil {
		return jobs.Job{}, err
	}
	if r.Status != 200 {
		return jobs.Job{}, fmt.Errorf("job %s: %s", id, r)
	}
	var j jobs.Job
	return j, json.Unmarshal(r.Body, &j)
}

// Wait polls a job until cond holds for it or timeout passes.
func (c Client) Wait(id string, timeout time.Duration, cond func(jobs.Job) bool) (jobs.Job, error) {
	deadline := time.Now().Add(timeout)
	var last jobs.Job
	for time.Now().Before(deadline) {
		j, err := c.Job(id)
		if err == nil {
			last = j
			if cond(j) {
				return j, nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return last, fmt.Errorf("job %s: condition not met within %v; last state %q (attempt %d, error %q)", id, timeout, last.State, last.Attempt, last.Error)
}

// Finished is a Wait condition: the job reached a terminal state.
func Finished(j jobs.Job) bool { return jobs.Terminal(j.State) }

// File downloads one of a job's outputs.
func (c Client) File(id, name string) ([]byte, error) {
	r, err := c.Do("GET", "/api/v1/jobs/"+id+"/files/"+name, "", nil, nil)
	if err != nil {
		return nil, err
	}
	if r.Status != 200 {
		return nil, fmt.Errorf("file %s: %s", name, r)
	}
	return r.Body, nil
}

// Tarball builds a .tar.gz of files (name → content); a name ending in
// "@" + path is copied from that path on disk.
func Tarball(files map[string]string) ([]byte, error) {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for name, content := range files {
		data := []byte(content)
		if from, ok := strings.CutPrefix(content, "@"); ok {
			b, err := os.ReadFile(from)
			if err != nil {
				return nil, err
			}
			data = b
		}
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}); err != nil {
			return nil, err
		}
		tw.Write(data)
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := gz.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
