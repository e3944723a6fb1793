package sigstore_test

import (
	"context"
	"crypto"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/sigstore/sigstore-go/pkg/root"
)

// stack is the local Sigstore deployment shared by all tests of the
// process: the OIDC issuer, Fulcio and the TSA in-process (the TSA's
// configuration is global, so there is one), Rekor v2 started on first use.
type stack struct {
	dir    string
	oidc   *oidcIssuer
	fulcio *fulcio
	tsa    *tsa

	rekorMu sync.Mutex
	rekor   *rekor
}

var (
	stackOnce sync.Once
	shared    *stack
	sharedErr error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if shared != nil {
		shared.Close()
	}
	os.Exit(code)
}

func getStack(t *testing.T) *stack {
	t.Helper()
	stackOnce.Do(func() { shared, sharedErr = newStack() })
	if sharedErr != nil {
		t.Fatalf("local Sigstore stack: %v", sharedErr)
	}
	return shared
}

func newStack() (*stack, error) {
	dir, err := os.MkdirTemp("", "cleanroom-sigstore-")
	if err != nil {
		return nil, err
	}
	s := &stack{dir: dir}
	if s.oidc, err = newOIDCIssuer(); err != nil {
		return nil, fmt.Errorf("OIDC issuer: %w", err)
	}
	if s.fulcio, err = startFulcio(context.Background(), s.oidc.URL); err != nil {
		s.Close()
		return nil, fmt.Errorf("fulcio: %w", err)
	}
	if s.tsa, err = startTSA(); err != nil {
		s.Close()
		return nil, fmt.Errorf("TSA: %w", err)
	}
	return s, nil
}

// needRekor starts Rekor v2 (building the binary on first use). A missing
// binary that cannot be built skips the test locally and fails it under CI.
func (s *stack) needRekor(t *testing.T) *rekor {
	t.Helper()
	s.rekorMu.Lock()
	defer s.rekorMu.Unlock()
	if s.rekor != nil {
		return s.rekor
	}
	bin := rekorTool.ensure(t)
	r, err := startRekor(bin, s.dir)
	if err != nil {
		t.Fatalf("rekor v2: %v", err)
	}
	s.rekor = r
	return r
}

func (s *stack) Close() {
	s.rekor.Close()
	if s.tsa != nil {
		s.tsa.Close()
	}
	if s.fulcio != nil {
		s.fulcio.Close()
	}
	if s.oidc != nil {
		s.oidc.Close()
	}
	os.RemoveAll(s.dir)
}

// trustedRoot trusts this deployment's Fulcio CA and TSA, and its Rekor
// log when withRekor. It goes through JSON, as cosign will read it, and
// is also written to <dir>/trusted_root.json.
func (s *stack) trustedRoot(t *testing.T, withRekor bool) (*root.TrustedRoot, string) {
	t.Helper()
	return s.trustedRootWithFulcio(t, withRekor, s.fulcio)
}

// trustedRootWithFulcio is trustedRoot with another Fulcio's CA.
func (s *stack) trustedRootWithFulcio(t *testing.T, withRekor bool, f *fulcio) (*root.TrustedRoot, string) {
	t.Helper()
	start := time.Now().Add(-time.Hour)
	fca := &root.FulcioCertificateAuthority{Root: f.Root, URI: f.URL, ValidityPeriodStart: start}
	c := s.tsa.Chain
	tca := &root.SigstoreTimestampingAuthority{
		Leaf: c[0], Intermediates: c[1 : len(c)-1], Root: c[len(c)-1],
		URI: s.tsa.URL, ValidityPeriodStart: start,
	}
	tlogs := map[string]*root.TransparencyLog{}
	if withRekor {
		r := s.needRekor(t)
		tlogs[hex.EncodeToString(r.LogID)] = &root.TransparencyLog{
			BaseURL: "http://" + rekorOrigin, ID: r.LogID, HashFunc: crypto.SHA256,
			PublicKey: r.Pub, SignatureHashFunc: crypto.SHA512, ValidityPeriodStart: start,
		}
	}
	tr, err := root.NewTrustedRoot(root.TrustedRootMediaType01, []root.CertificateAuthority{fca}, nil, []root.TimestampingAuthority{tca}, tlogs)
	if err != nil {
		t.Fatal(err)
	}
	js, err := tr.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "trusted_root.json")
	if err := os.WriteFile(path, js, 0o644); err != nil {
		t.Fatal(err)
	}
	tr, err = root.NewTrustedRootFromJSON(js)
	if err != nil {
		t.Fatal(err)
	}
	return tr, path
}
