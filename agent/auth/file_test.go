package auth

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func tokensPath(t *testing.T) string {
	return filepath.Join(t.TempDir(), "etc", "cleanroom", "agent-tokens.json")
}

func TestCreateListRevoke(t *testing.T) {
	path := tokensPath(t)
	if toks, err := List(path); err != nil || len(toks) != 0 {
		t.Fatalf("List of a missing file = %v, %v; want no tokens, no error", toks, err)
	}
	secret, tok, err := Create(path, "ci-bot", ScopeSubmit)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(secret, "crt_") {
		t.Errorf("secret %q lacks the crt_ prefix", secret)
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(secret, "crt_"))
	if err != nil || len(raw) != 32 {
		t.Errorf("secret body is not base64url of 32 bytes: %d bytes, %v", len(raw), err)
	}
	if tok.Name != "ci-bot" || tok.Scope != ScopeSubmit || tok.Hash != HashSecret(secret) || tok.Created.IsZero() || !strings.HasPrefix(tok.ID, "tok_") {
		t.Errorf("token = %+v", tok)
	}
	if ValidateName(tok.ID) == nil {
		t.Errorf("id %q is a valid name; ids and names could collide", tok.ID)
	}

	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), secret) || strings.Contains(string(b), strings.TrimPrefix(secret, "crt_")) {
		t.Fatal("the tokens file contains the secret")
	}
	var f struct {
		Version int               `json:"version"`
		Tokens  []json.RawMessage `json:"tokens"`
	}
	if err := json.Unmarshal(b, &f); err != nil || f.Version != 1 || len(f.Tokens) != 1 {
		t.Fatalf("file = %s (%v)", b, err)
	}

	s2, tok2, err := Create(path, "viewer", ScopeRead)
	if err != nil {
		t.Fatal(err)
	}
	if s2 == secret || tok2.ID == tok.ID {
		t.Fatal("two tokens share a secret or an id")
	}
	if _, _, err := Create(path, "ci-bot", ScopeAdmin); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("duplicate name: err = %v", err)
	}
	toks, err := List(path)
	if err != nil || len(toks) != 2 || toks[0] != tok || toks[1] != tok2 {
		t.Fatalf("List = %+v, %v", toks, err)
	}

	// By name, then by id.
	if err := Revoke(path, "ci-bot"); err != nil {
		t.Fatal(err)
	}
	if err := Revoke(path, tok2.ID); err != nil {
		t.Fatal(err)
	}
	if toks, _ := List(path); len(toks) != 0 {
		t.Fatalf("after revoking both: %+v", toks)
	}
	err = Revoke(path, "ci-bot")
	if err == nil || !strings.Contains(err.Error(), `"ci-bot"`) {
		t.Errorf("revoking an unknown token: err = %v", err)
	}
}

func TestCreateRejects(t *testing.T) {
	path := tokensPath(t)
	for _, name := range []string{"", "CI", "-x", ".x", "a b", "a/b", "é", strings.Repeat("a", 65), "tok_0123456789ab"} {
		if _, _, err := Create(path, name, ScopeRead); err == nil {
			t.Errorf("Create name %q: no error", name)
		}
	}
	for _, name := range []string{"a", "0", "ci-bot.prod_1", strings.Repeat("a", 64)} {
		if _, _, err := Create(path, name, ScopeRead); err != nil {
			t.Errorf("Create name %q: %v", name, err)
		}
	}
	if _, _, err := Create(path, "x", Scope("root")); err == nil {
		t.Error("Create with an unknown scope: no error")
	}
}

func TestFileModes(t *testing.T) {
	path := tokensPath(t)
	if _, _, err := Create(path, "a", ScopeAdmin); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if m := fi.Mode().Perm(); m != 0o600 {
		t.Errorf("tokens file mode %o, want 600", m)
	}
	di, err := os.Stat(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if m := di.Mode().Perm(); m != 0o700 {
		t.Errorf("created directory mode %o, want 700", m)
	}
	// A file someone loosened is tightened by the next write.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Revoke(path, "a"); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("after revoke mode %o, want 600", fi.Mode().Perm())
	}
	// No temporary files left behind.
	ents, _ := os.ReadDir(filepath.Dir(path))
	for _, e := range ents {
		if e.Name() != "agent-tokens.json" && e.Name() != "agent-tokens.json.lock" {
			t.Errorf("left behind: %s", e.Name())
		}
	}
}

func TestConcurrentCreate(t *testing.T) {
	path := tokensPath(t)
	const n = 24
	var wg sync.WaitGroup
	secrets := make([]string, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			secrets[i], _, errs[i] = Create(path, fmt.Sprintf("bot-%d", i), ScopeRead)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Create %d: %v", i, err)
		}
	}
	toks, err := List(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(toks) != n {
		t.Fatalf("%d tokens after %d concurrent creates: lost updates", len(toks), n)
	}
	s, err := OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	for i, sec := range secrets {
		tok, ok := s.Authenticate(sec)
		if !ok || tok.Name != fmt.Sprintf("bot-%d", i) {
			t.Errorf("secret %d authenticates as %+v, %v", i, tok, ok)
		}
	}
}

func TestParseRejectsBrokenFiles(t *testing.T) {
	good := `{"id":"tok_1","name":"a","scope":"read","hash":"` + HashSecret("x") + `","created":"2025-01-01T00:00:00Z"}`
	cases := map[string]string{
		"not json":      `{`,
		"version 2":     `{"version":2,"tokens":[]}`,
		"unknown field": `{"version":1,"tokens":[],"extra":1}`,
		"bad scope":     `{"version":1,"tokens":[` + strings.Replace(good, `"read"`, `"root"`, 1) + `]}`,
		"bad hash":      `{"version":1,"tokens":[` + strings.Replace(good, HashSecret("x"), "abcd", 1) + `]}`,
		"bad name":      `{"version":1,"tokens":[` + strings.Replace(good, `"name":"a"`, `"name":"A"`, 1) + `]}`,
		"duplicate id":  `{"version":1,"tokens":[` + good + `,` + strings.Replace(good, `"name":"a"`, `"name":"b"`, 1) + `]}`,
	}
	for name, body := range cases {
		path := filepath.Join(t.TempDir(), "tokens.json")
		os.WriteFile(path, []byte(body), 0o600)
		if _, err := List(path); err == nil {
			t.Errorf("%s: List accepted %s", name, body)
		}
		if _, err := OpenStore(path); err == nil {
			t.Errorf("%s: OpenStore accepted %s", name, body)
		}
		if _, _, err := Create(path, "new", ScopeRead); err == nil {
			t.Errorf("%s: Create overwrote a broken file", name)
		}
	}
	path := filepath.Join(t.TempDir(), "tokens.json")
	os.WriteFile(path, []byte(`{"version":1,"tokens":[`+good+`]}`), 0o600)
	if toks, err := List(path); err != nil || len(toks) != 1 {
		t.Errorf("good file: %v, %v", toks, err)
	}
}
