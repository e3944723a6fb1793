package sign

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func configField(err error) string {
	var ce *ConfigError
	if errors.As(err, &ce) {
		return ce.Field
	}
	return ""
}

func TestNewKeyMode(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	priv, _, err := GenerateKeyPair(dir, []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	pwFile := filepath.Join(dir, "pw")
	os.WriteFile(pwFile, []byte("pw\n"), 0o600) // the newline is not part of it
	for name, c := range map[string]Config{
		"password":      {Mode: ModeKey, Key: priv, Password: []byte("pw")},
		"password file": {Mode: ModeKey, Key: priv, PasswordFile: pwFile},
	} {
		s, err := New(ctx, c)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !strings.HasPrefix(s.Identity(), "key") {
			t.Errorf("%s: identity %q", name, s.Identity())
		}
	}
	for name, tc := range map[string]struct {
		c     Config
		field string
	}{
		"wrong password":   {Config{Mode: ModeKey, Key: priv, Password: []byte("nope")}, "key"},
		"no key file":      {Config{Mode: ModeKey, Key: filepath.Join(dir, "none")}, "key"},
		"no password file": {Config{Mode: ModeKey, Key: priv, PasswordFile: filepath.Join(dir, "none")}, "password_file"},
		"unknown mode":     {Config{Mode: "gpg"}, "mode"},
	} {
		if _, err := New(ctx, tc.c); configField(err) != tc.field {
			t.Errorf("%s: err %v, want one naming %s", name, err, tc.field)
		}
	}
	if s, err := New(ctx, Config{}); s != nil || err != nil {
		t.Errorf("no mode: %v %v, want no signer", s, err)
	}
}

// Keyless checks the token when the signer is built, against the
// configured clock, and signs with Fulcio's certificate for it.
func TestNewKeylessMode(t *testing.T) {
	ctx := context.Background()
	f := newFakeSigstore(t)
	tok := gitlabToken(t, time.Now().Add(time.Hour))
	c := Config{Mode: ModeKeyless, FulcioURL: f.fulcio.URL, TSAURL: f.tsa.URL, SkipTlog: true, Token: staticToken(tok)}
	var logged []any
	c.Log = func(msg string, args ...any) { logged = append([]any{msg}, args...) }
	s, err := New(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.SignBlob(ctx, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if len(logged) == 0 || logged[0] != "keyless signing" {
		t.Errorf("logged %v", logged)
	}

	// From a file, as the agent's child reads it.
	file := filepath.Join(t.TempDir(), "token")
	os.WriteFile(file, []byte(tok+"\n"), 0o600)
	if _, err := New(ctx, Config{Mode: ModeKeyless, FulcioURL: f.fulcio.URL, TSAURL: f.tsa.URL, SkipTlog: true, IdentityTokenFile: file}); err != nil {
		t.Fatalf("token file: %v", err)
	}

	late := c
	late.Log = nil
	late.Now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	if _, err := New(ctx, late); configField(err) != "identity_token" {
		t.Errorf("expired token: %v, want an identity_token error", err)
	}
	missing := c
	missing.Token = nil
	missing.IdentityTokenFile = filepath.Join(t.TempDir(), "none")
	if _, err := New(ctx, missing); configField(err) != "identity_token" || !errors.Is(err, ErrNoToken) {
		t.Errorf("missing token file: %v", err)
	}
	badRoot := c
	badRoot.TrustedRoot = filepath.Join(t.TempDir(), "none.json")
	if _, err := New(ctx, badRoot); configField(err) != "trusted_root" {
		t.Errorf("missing trusted root: %v", err)
	}
}
