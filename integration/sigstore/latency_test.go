package sigstore_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"sync"
	"testing"
	"time"

	"github.com/cleanroom-ci/cleanroom/sign"
)

// TestSigningLatency reports what signing costs per artifact (1 MiB each),
// with a key and keyless against the local stack (Fulcio + TSA + Rekor v2).
// It asserts only that signing works; the numbers are for the log (-v).
func TestSigningLatency(t *testing.T) {
	ctx := context.Background()
	data := bytes.Repeat([]byte("cleanroom"), 1<<20/9)
	stmt := slsaStatement(t, "a.tar", data)

	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ks, _ := sign.NewKeySigner(k, sign.KeyOptions{})
	const nKey = 50
	start := time.Now()
	for i := 0; i < nKey; i++ {
		if _, err := ks.SignBlob(ctx, data); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("key (P-256), blob of 1 MiB: %v per artifact", time.Since(start)/nKey)
	start = time.Now()
	for i := 0; i < nKey; i++ {
		if _, err := ks.SignDSSE(ctx, sign.InTotoPayloadType, stmt); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("key (P-256), DSSE statement: %v per statement", time.Since(start)/nKey)

	st := getStack(t)
	tok := mustToken(t, st, job, time.Now().Add(30*time.Minute))
	for _, withRekor := range []bool{false, true} {
		s := keylessSigner(t, st, withRekor, tok) // includes self-verification
		first := time.Now()
		if _, err := s.SignBlob(ctx, data); err != nil {
			t.Fatal(err)
		}
		firstDur := time.Since(first)
		const n = 5
		start := time.Now()
		for i := 0; i < n; i++ {
			if _, err := s.SignBlob(ctx, data); err != nil {
				t.Fatal(err)
			}
		}
		seq := time.Since(start) / n
		// The runner may sign its artifacts concurrently: Rekor v2 answers an
		// add once the next checkpoint is published (rekor-tiles polls for it
		// every second), and concurrent adds share that wait.
		start = time.Now()
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := s.SignBlob(ctx, data)
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		t.Logf("keyless (Fulcio+TSA, Rekor v2=%v, self-verify): first artifact %v (incl. Fulcio certificate), then %v per artifact sequentially, %v for %d concurrently",
			withRekor, firstDur.Round(time.Millisecond), seq.Round(time.Millisecond), time.Since(start).Round(time.Millisecond), n)
	}
}
