package sigstore_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/sigstore/rekor-tiles/v2/pkg/note"
)

// rekorOrigin is the log's checkpoint origin (--hostname). Verifiers take
// the origin from the trusted root's BaseURL host, so both must agree; the
// name never resolves, nothing connects to it.
const rekorOrigin = "rekor.local"

// rekor is a real Rekor v2 (rekor-tiles, POSIX backend) listening on
// loopback only, as a subprocess. Signing and verifying need only its
// write API: the add-entry response carries the inclusion proof and the
// signed checkpoint.
type rekor struct {
	cmd   *exec.Cmd
	URL   string
	Pub   ed25519.PublicKey
	LogID []byte
	log   string
	done  chan struct{}
}

func startRekor(bin, dir string) (*rekor, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	der, _ := x509.MarshalPKCS8PrivateKey(priv)
	keyPath := filepath.Join(dir, "rekor-signer.pem")
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return nil, err
	}
	_, logID, err := note.KeyHash(rekorOrigin, pub)
	if err != nil {
		return nil, err
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ { // a picked port may be taken meanwhile
		r, err := launchRekor(bin, dir, keyPath, attempt)
		if err == nil {
			r.Pub, r.LogID = pub, logID
			return r, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

func launchRekor(bin, dir, keyPath string, attempt int) (*rekor, error) {
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	storage := filepath.Join(dir, fmt.Sprintf("rekor-tiles-%d", attempt))
	logPath := filepath.Join(dir, fmt.Sprintf("rekor-%d.log", attempt))
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(bin, "serve",
		"--storage-dir="+storage,
		"--signer-filepath="+keyPath,
		"--hostname="+rekorOrigin,
		"--http-address=127.0.0.1", "--http-port="+strconv.Itoa(ports[0]),
		"--grpc-address=127.0.0.1", "--grpc-port="+strconv.Itoa(ports[1]),
		"--http-metrics-port="+strconv.Itoa(ports[2]),
		"--checkpoint-interval=200ms", "--batch-max-age=20ms",
		"--log-level=warn",
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	r := &rekor{cmd: cmd, URL: fmt.Sprintf("http://127.0.0.1:%d", ports[0]), log: logPath, done: make(chan struct{})}
	go func() { cmd.Wait(); close(r.done) }()

	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-r.done:
			b, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("rekor-server exited during start-up: %s", tail(b, 2000))
		default:
		}
		resp, err := http.Get(r.URL + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return r, nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	r.Close()
	b, _ := os.ReadFile(logPath)
	return nil, fmt.Errorf("rekor-server not healthy after 30s: %s", tail(b, 2000))
}

// Close stops the server (SIGTERM, then SIGKILL to its process group).
func (r *rekor) Close() {
	if r == nil || r.cmd.Process == nil {
		return
	}
	r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(5 * time.Second):
		syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
		<-r.done
	}
}

func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
