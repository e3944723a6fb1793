package attack

import (
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cleanroom-ci/cleanroom/internal/clitest"
)

// Domain fronting: the step CONNECTs to an allowed host with the right SNI,
// then asks the server (one that hosts several sites, like a CDN) for
// another virtual host in the Host header inside TLS. An opaque tunnel
// cannot see that header (a documented limit); inspection refuses it (421),
// and --require-inspection lets an admin demand inspection for a rule.
func TestDomainFrontingAttacks(t *testing.T) {
	e := clitest.New(t, cfg)
	var hidden atomic.Int64
	front := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.Host, "hidden.") {
			hidden.Add(1)
			w.Write([]byte("HIDDEN-VHOST"))
			return
		}
		w.Write([]byte("FRONT"))
	}))
	defer front.Close()
	ca := filepath.Join(t.TempDir(), "front-ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: front.Certificate().Raw}), 0o644)
	hp := strings.TrimPrefix(front.URL, "https://")
	buildFronter(t, filepath.Join(e.Dir, "fronter"))
	e.Pipeline(fmt.Sprintf(`version: 1
image: IMAGE
egress:
  allow: ["%s"]
steps:
  - name: front
    timeout: 1m
    run: |
      echo "@@front=$(./fronter %s hidden.attack.test 2>&1 | head -c 200 | tr '\r\n' '  ')"
`, hp, hp))

	r := e.Run(nil, "run")
	opaque := probes(r.Stderr)["front"]
	check(t, "network", "domain fronting through an opaque CONNECT (allowed SNI, another Host inside TLS)", "reaches the other virtual host: not stopped without inspection (documented limit)",
		opaque, strings.Contains(opaque, "HIDDEN-VHOST"))
	mu.Lock()
	results[len(results)-1].control = true
	mu.Unlock()

	before := hidden.Load()
	r = e.Run(nil, "run", "--inspect", "--upstream-ca", ca)
	inspected := probes(r.Stderr)["front"]
	check(t, "network", "domain fronting with TLS inspection (--inspect)", "421, the other virtual host never asked",
		fmt.Sprintf("%s; hidden vhost hits: %d", inspected, hidden.Load()-before), strings.Contains(inspected, "421") && hidden.Load() == before)

	r = e.Run(nil, "run", "--require-inspection", hp, "--upstream-ca", ca)
	required := probes(r.Stderr)["front"]
	check(t, "network", "domain fronting to a rule named by --require-inspection (the pipeline does not inspect)", "421, the other virtual host never asked",
		fmt.Sprintf("exit %d, %s; hidden vhost hits: %d", r.Code, required, hidden.Load()-before), strings.Contains(required, "421") && hidden.Load() == before)
}

// fronterSource is a client busybox does not have: CONNECT through
// $HTTPS_PROXY to host:port, TLS with that host's SNI (none for an IP),
// then a request whose Host header names another site.
const fronterSource = `package main

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
)

func main() {
	target, vhost := os.Args[1], os.Args[2]
	pu, err := url.Parse(os.Getenv("HTTPS_PROXY"))
	if err != nil {
		panic(err)
	}
	c, err := net.Dial("tcp", pu.Host)
	if err != nil {
		panic(err)
	}
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		fmt.Println("CONNECT refused:", resp.Status, err)
		return
	}
	host, _, _ := net.SplitHostPort(target)
	tc := tls.Client(c, &tls.Config{ServerName: host, InsecureSkipVerify: true})
	fmt.Fprintf(tc, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", vhost)
	r2, err := http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	body, _ := io.ReadAll(r2.Body)
	fmt.Println(r2.Status, string(body))
}
`

func buildFronter(t *testing.T, out string) {
	t.Helper()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "main.go"), []byte(fronterSource), 0o644)
	os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module fronter\n\ngo 1.22\n"), 0o644)
	cmd := exec.Command("go", "build", "-o", out, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-mod=mod")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the fronting client: %v\n%s", err, b)
	}
}
