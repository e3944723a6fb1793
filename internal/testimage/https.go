package testimage

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/cleanroom-ci/cleanroom/internal/testenv"
)

// HTTPSGetPath is where the HTTPS test image has its client.
const HTTPSGetPath = "/usr/local/bin/httpsget"

// ImageBundleMarker is a line in the HTTPS test image's own CA bundle, so
// that a test can tell the image's bundle was kept when the run's CA was
// added to it.
const ImageBundleMarker = "# cleanroom test image: system CA bundle"

// httpsGetSource is a tiny HTTPS client: busybox's wget does not verify
// certificates at all, so it cannot show that a step trusts the run's CA
// (and nothing else). It uses HTTPS_PROXY and SSL_CERT_FILE like most
// tools, offers HTTP/2 unless -http1, and prints the protocol and the
// sha256 of what it saved.
const httpsGetSource = `package main

import (
	"crypto/sha256"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"time"
)

func main() {
	http1 := flag.Bool("http1", false, "do not offer HTTP/2")
	flag.Parse()
	if flag.NArg() != 2 {
		fmt.Fprintln(os.Stderr, "usage: httpsget [-http1] URL OUT")
		os.Exit(2)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	// Go's ProxyFromEnvironment never proxies loopback addresses, which
	// is all the tests have: take HTTPS_PROXY as it is.
	tr.Proxy = func(*http.Request) (*url.URL, error) { return url.Parse(os.Getenv("HTTPS_PROXY")) }
	if *http1 {
		tr.ForceAttemptHTTP2 = false
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		tr.TLSClientConfig = &tls.Config{NextProtos: []string{"http/1.1"}}
	}
	c := &http.Client{Transport: tr, Timeout: 2 * time.Minute}
	resp, err := c.Get(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, "httpsget:", err)
		os.Exit(1)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		fmt.Fprintf(os.Stderr, "httpsget: %s: %s\n", resp.Status, b)
		os.Exit(1)
	}
	f, err := os.Create(flag.Arg(1))
	if err != nil {
		fmt.Fprintln(os.Stderr, "httpsget:", err)
		os.Exit(1)
	}
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(f, h), resp.Body); err != nil {
		fmt.Fprintln(os.Stderr, "httpsget:", err)
		os.Exit(1)
	}
	if err := f.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "httpsget:", err)
		os.Exit(1)
	}
	fmt.Printf("httpsget: %s sha256=%x\n", resp.Proto, h.Sum(nil))
}
`

var httpsImage = &cachedImage{
	name: "https",
	fill: func(root, scratch string) error {
		os.WriteFile(filepath.Join(scratch, "go.mod"), []byte("module httpsget\n\ngo 1.22\n"), 0o644)
		os.WriteFile(filepath.Join(scratch, "main.go"), []byte(httpsGetSource), 0o644)
		bin := filepath.Join(root, HTTPSGetPath)
		os.MkdirAll(filepath.Dir(bin), 0o755)
		cmd := exec.Command("go", "build", "-trimpath", "-o", bin, ".")
		cmd.Dir = scratch
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOTOOLCHAIN=local", "GOFLAGS=-mod=mod", "GOPROXY=off", "GOWORK=off")
		if out, err := cmd.CombinedOutput(); err != nil {
			return &buildError{err: err, out: string(out)}
		}
		certs := filepath.Join(root, "etc/ssl/certs")
		os.MkdirAll(certs, 0o755)
		if err := os.WriteFile(filepath.Join(certs, "ca-certificates.crt"), []byte(ImageBundleMarker+"\n"), 0o644); err != nil {
			return err
		}
		return os.Symlink("certs/ca-certificates.crt", filepath.Join(root, "etc/ssl/cert.pem"))
	},
}

// HTTPS returns an OCI archive of busybox plus a static HTTPS client
// (httpsget, built from source with the host's Go) and a system CA bundle
// at the Debian path, with the Alpine path a relative symlink to it: what
// TLS inspection has to extend with the run's CA.
func HTTPS(t testing.TB) string {
	t.Helper()
	testenv.RequireBinary(t, "go")
	return httpsImage.get(t)
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return "go build httpsget: " + e.err.Error() + "\n" + e.out }
