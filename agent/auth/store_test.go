package auth

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// fakeClock lets the tests step over the once-a-second reload check.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// syncBuffer is a log sink safe for the race detector.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestAuthenticate(t *testing.T) {
	path := tokensPath(t)
	sa, ta, _ := Create(path, "a", ScopeRead)
	sb, tb, _ := Create(path, "b", ScopeAdmin)
	sc, _, _ := Create(path, "c", ScopeSubmit)
	s, err := OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	if s.Len() != 3 {
		t.Fatalf("Len = %d", s.Len())
	}
	if tok, ok := s.Authenticate(sa); !ok || tok != ta {
		t.Errorf("a: %+v %v", tok, ok)
	}
	if tok, ok := s.Authenticate(sb); !ok || tok != tb {
		t.Errorf("b: %+v %v", tok, ok)
	}
	if tok, ok := s.Authenticate(sc); !ok || tok.Name != "c" {
		t.Errorf("c: %+v %v", tok, ok)
	}
	for _, wrong := range []string{"", "crt_", sa + "x", sa[:len(sa)-1], strings.ToUpper(sa), ta.Hash, ta.ID, "a"} {
		if tok, ok := s.Authenticate(wrong); ok {
			t.Errorf("%q authenticated as %s", wrong, tok.Name)
		}
	}
	var nilStore *Store
	if _, ok := nilStore.Authenticate(sa); ok {
		t.Error("a nil store authenticated")
	}
}

func TestMissingFileRefusesEverything(t *testing.T) {
	path := tokensPath(t)
	s, err := OpenStore(path)
	if err != nil {
		t.Fatalf("OpenStore of a missing file: %v", err)
	}
	if s.Len() != 0 {
		t.Fatalf("Len = %d", s.Len())
	}
	if _, ok := s.Authenticate("crt_anything"); ok {
		t.Fatal("authenticated with no tokens file")
	}
}

func TestReload(t *testing.T) {
	path := tokensPath(t)
	clock := &fakeClock{t: time.Unix(1_000_000, 0)}
	s, err := OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	s.now = clock.Now
	s.checked = clock.Now()
	logs := &syncBuffer{}
	s.SetLogger(hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Trace}))

	secret, _, err := Create(path, "late", ScopeSubmit)
	if err != nil {
		t.Fatal(err)
	}
	// Within the interval the file is not looked at.
	if _, ok := s.Authenticate(secret); ok {
		t.Fatal("the file was re-read before the interval passed")
	}
	clock.Advance(time.Second)
	if tok, ok := s.Authenticate(secret); !ok || tok.Name != "late" {
		t.Fatalf("token created after start not accepted after reload: %+v %v", tok, ok)
	}

	// Revoke takes effect.
	other, _, _ := Create(path, "other", ScopeRead)
	if err := Revoke(path, "late"); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Second)
	if _, ok := s.Authenticate(secret); ok {
		t.Fatal("revoked token still accepted after reload")
	}
	if _, ok := s.Authenticate(other); !ok {
		t.Fatal("the other token is not accepted")
	}

	// A broken file keeps the tokens in force and is reported once.
	if err := os.WriteFile(path, []byte(`{"version":1,"tokens":[`), 0o600); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		clock.Advance(time.Second)
		if _, ok := s.Authenticate(other); !ok {
			t.Fatal("a broken file dropped the tokens loaded before")
		}
	}
	if n := strings.Count(logs.String(), "cannot reload the tokens file"); n != 1 {
		t.Fatalf("the reload error was logged %d times, want once:\n%s", n, logs)
	}
	if strings.Contains(logs.String(), other) || strings.Contains(logs.String(), HashSecret(other)) {
		t.Fatal("a secret or hash was logged")
	}

	// Fixed by hand, written in place (same inode): reloads.
	third, _, err := Create(filepath.Join(t.TempDir(), "scratch.json"), "third", ScopeAdmin)
	if err != nil {
		t.Fatal(err)
	}
	fixed := `{"version":1,"tokens":[{"id":"tok_3","name":"third","scope":"admin","hash":"` + HashSecret(third) + `","created":"2025-01-01T00:00:00Z"}]}`
	if err := os.WriteFile(path, []byte(fixed), 0o600); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Second)
	if tok, ok := s.Authenticate(third); !ok || tok.Scope != ScopeAdmin {
		t.Fatalf("fixed file not reloaded: %+v %v", tok, ok)
	}
	if _, ok := s.Authenticate(other); ok {
		t.Fatal("token absent from the fixed file still accepted")
	}

	// Removing the file revokes everything.
	os.Remove(path)
	clock.Advance(time.Second)
	if _, ok := s.Authenticate(third); ok {
		t.Fatal("token accepted after the file was removed")
	}
	if s.Len() != 0 {
		t.Fatalf("Len = %d after removal", s.Len())
	}
}

func TestAuthenticateConcurrentWithReload(t *testing.T) {
	path := tokensPath(t)
	secret, _, _ := Create(path, "steady", ScopeRead)
	s, err := OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	s.interval = 0 // look at the file on every call
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, ok := s.Authenticate(secret); !ok {
					t.Error("steady token refused during reloads")
					return
				}
			}
		}()
	}
	for i := range 20 {
		name := "churn-" + string(rune('a'+i))
		if _, _, err := Create(path, name, ScopeRead); err != nil {
			t.Error(err)
		}
		if err := Revoke(path, name); err != nil {
			t.Error(err)
		}
	}
	close(stop)
	wg.Wait()
}
