package sign

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/sigstore/sigstore-go/pkg/root"
)

func TestKeySignBlobRoundTrip(t *testing.T) {
	ctx := context.Background()
	artifact := []byte("artifact bytes\n")
	for _, kind := range []string{"p256", "p384", "ed25519"} {
		t.Run(kind, func(t *testing.T) {
			k := newKey(t, kind)
			s, err := NewKeySigner(k, KeyOptions{})
			if err != nil {
				t.Fatal(err)
			}
			b, err := s.SignBlob(ctx, artifact)
			if err != nil {
				t.Fatal(err)
			}
			var mt struct{ MediaType string }
			if err := json.Unmarshal(b, &mt); err != nil || mt.MediaType != BundleMediaType {
				t.Fatalf("media type %q (%v)", mt.MediaType, err)
			}
			res, err := VerifyBlob(b, bytes.NewReader(artifact), VerifyOptions{PublicKey: k.Public()})
			if err != nil {
				t.Fatal(err)
			}
			if res.Identity != s.Identity() || !strings.HasPrefix(res.Identity, "key:") {
				t.Fatalf("identity %q, signer %q", res.Identity, s.Identity())
			}

			_, err = VerifyBlob(b, strings.NewReader("artifact bytes, modified\n"), VerifyOptions{PublicKey: k.Public()})
			if !errors.Is(err, ErrSignatureMismatch) {
				t.Fatalf("tampered artifact: got %v, want ErrSignatureMismatch", err)
			}
			other := newKey(t, kind)
			_, err = VerifyBlob(b, bytes.NewReader(artifact), VerifyOptions{PublicKey: other.Public()})
			if !errors.Is(err, ErrSignatureMismatch) || !strings.Contains(err.Error(), "another key") {
				t.Fatalf("other key: got %v, want ErrSignatureMismatch naming another key", err)
			}
		})
	}
}

func TestKeySignDSSERoundTrip(t *testing.T) {
	ctx := context.Background()
	stmt := statement([]byte("hello"))
	for _, kind := range []string{"p256", "p384", "ed25519"} {
		t.Run(kind, func(t *testing.T) {
			k := newKey(t, kind)
			s, _ := NewKeySigner(k, KeyOptions{})
			b, err := s.SignDSSE(ctx, InTotoPayloadType, stmt)
			if err != nil {
				t.Fatal(err)
			}
			got, res, err := VerifyAttestation(b, VerifyOptions{PublicKey: k.Public()})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, stmt) || res.Identity != s.Identity() {
				t.Fatal("statement or identity differ")
			}

			// Tamper with the signed statement inside the envelope.
			tampered := tamperPayload(t, b, func(p []byte) []byte {
				return bytes.Replace(p, []byte("cleanroom.yaml"), []byte("evil.yaml....."), 1)
			})
			if _, _, err := VerifyAttestation(tampered, VerifyOptions{PublicKey: k.Public()}); !errors.Is(err, ErrSignatureMismatch) {
				t.Fatalf("tampered statement: got %v, want ErrSignatureMismatch", err)
			} else if !strings.Contains(err.Error(), "statement") {
				t.Fatalf("error does not name the statement: %v", err)
			}
		})
	}
}

// tamperPayload rewrites the DSSE payload of a bundle, keeping the signature.
func tamperPayload(t *testing.T, bundleJSON []byte, f func([]byte) []byte) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(bundleJSON, &m); err != nil {
		t.Fatal(err)
	}
	env := m["dsseEnvelope"].(map[string]any)
	var p []byte
	if err := json.Unmarshal([]byte(`"`+env["payload"].(string)+`"`), &p); err != nil {
		t.Fatal(err)
	}
	q := f(p)
	if bytes.Equal(p, q) {
		t.Fatal("tamper function changed nothing")
	}
	enc, _ := json.Marshal(q)
	env["payload"] = strings.Trim(string(enc), `"`)
	out, _ := json.Marshal(m)
	return out
}

func TestVerifyWrongKind(t *testing.T) {
	ctx := context.Background()
	k := newKey(t, "p256")
	s, _ := NewKeySigner(k, KeyOptions{})
	blob, _ := s.SignBlob(ctx, []byte("x"))
	att, _ := s.SignDSSE(ctx, InTotoPayloadType, statement([]byte("x")))
	other, _ := s.SignDSSE(ctx, "application/vnd.example+json", []byte(`{"a":1}`))
	o := VerifyOptions{PublicKey: k.Public()}

	if _, err := VerifyBlob(att, strings.NewReader("x"), o); !errors.Is(err, ErrMalformedBundle) {
		t.Errorf("attestation as blob: %v", err)
	}
	if _, _, err := VerifyAttestation(blob, o); !errors.Is(err, ErrMalformedBundle) {
		t.Errorf("blob as attestation: %v", err)
	}
	if _, _, err := VerifyAttestation(other, o); !errors.Is(err, ErrMalformedBundle) || !strings.Contains(err.Error(), "application/vnd.example+json") {
		t.Errorf("non-in-toto payload: %v", err)
	}
	for name, in := range map[string][]byte{
		"empty":     nil,
		"not-json":  []byte("{"),
		"no-fields": []byte(`{}`),
		"bad-type":  []byte(`{"mediaType":"application/vnd.dev.sigstore.bundle.v9+json"}`),
		"truncated": blob[:len(blob)/2],
	} {
		if _, err := VerifyBlob(in, strings.NewReader("x"), o); !errors.Is(err, ErrMalformedBundle) {
			t.Errorf("%s: got %v, want ErrMalformedBundle", name, err)
		}
	}
}

func TestVerifyOptionsMisuse(t *testing.T) {
	ctx := context.Background()
	k := newKey(t, "p256")
	s, _ := NewKeySigner(k, KeyOptions{})
	blob, _ := s.SignBlob(ctx, []byte("x"))
	empty, err := root.NewTrustedRootFromJSON([]byte(EmptyTrustedRootJSON))
	if err != nil {
		t.Fatal(err)
	}

	if _, err := VerifyBlob(blob, strings.NewReader("x"), VerifyOptions{}); err == nil {
		t.Error("no trust anchor accepted")
	}
	if _, err := VerifyBlob(blob, strings.NewReader("x"), VerifyOptions{PublicKey: k.Public(), CertIdentity: "x"}); err == nil {
		t.Error("identity with key accepted")
	}
	if _, err := VerifyBlob(blob, strings.NewReader("x"), VerifyOptions{TrustedRoot: empty, CertIdentity: "a", CertOIDCIssuer: "b"}); !errors.Is(err, ErrUntrustedRoot) {
		t.Errorf("key bundle verified keylessly: %v", err)
	}
	if _, err := VerifyBlob(blob, strings.NewReader("x"), VerifyOptions{PublicKey: k.Public(), TrustedRoot: empty, RequireTlog: true}); !errors.Is(err, ErrTlog) {
		t.Errorf("RequireTlog without entry: %v", err)
	}
	if _, err := VerifyBlob(blob, strings.NewReader("x"), VerifyOptions{PublicKey: k.Public(), TrustedRoot: empty, RequireTimestamp: true}); !errors.Is(err, ErrTimestamp) {
		t.Errorf("RequireTimestamp without timestamp: %v", err)
	}
	if _, err := VerifyBlob(blob, strings.NewReader("x"), VerifyOptions{PublicKey: k.Public(), RequireTimestamp: true}); err == nil {
		t.Error("RequireTimestamp without trusted root accepted")
	}
	// A trusted root alongside the key changes nothing for an undated bundle.
	if _, err := VerifyBlob(blob, strings.NewReader("x"), VerifyOptions{PublicKey: k.Public(), TrustedRoot: empty}); err != nil {
		t.Errorf("key + empty root: %v", err)
	}
}

func TestSignDSSERejectsEmpty(t *testing.T) {
	s, _ := NewKeySigner(newKey(t, "p256"), KeyOptions{})
	if _, err := s.SignDSSE(context.Background(), "", []byte("x")); err == nil {
		t.Error("empty payload type accepted")
	}
	if _, err := s.SignDSSE(context.Background(), InTotoPayloadType, nil); err == nil {
		t.Error("empty payload accepted")
	}
	if _, err := NewKeySigner(nil, KeyOptions{}); err == nil {
		t.Error("nil key accepted")
	}
}

// TestKeySignerConcurrent runs under -race: the runner signs artifacts in
// parallel with one Signer.
func TestKeySignerConcurrent(t *testing.T) {
	k := newKey(t, "p256")
	s, _ := NewKeySigner(k, KeyOptions{})
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			data := bytes.Repeat([]byte{byte(i)}, 1000)
			b, err := s.SignBlob(context.Background(), data)
			if err == nil {
				_, err = VerifyBlob(b, bytes.NewReader(data), VerifyOptions{PublicKey: k.Public()})
			}
			errs <- err
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

func BenchmarkKeySignBlob(b *testing.B) {
	for _, kind := range []string{"p256", "ed25519"} {
		b.Run(kind, func(b *testing.B) {
			s, _ := NewKeySigner(newKey(b, kind), KeyOptions{})
			data := bytes.Repeat([]byte("x"), 1<<20)
			b.SetBytes(int64(len(data)))
			for i := 0; i < b.N; i++ {
				if _, err := s.SignBlob(context.Background(), data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
