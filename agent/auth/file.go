package auth

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/cleanroom-ci/cleanroom/internal/atomicfile"
	"github.com/cleanroom-ci/cleanroom/internal/flock"
)

// DefaultTokensFile is where the agent and the token commands look unless
// told otherwise.
const DefaultTokensFile = "/etc/cleanroom/agent-tokens.json"

// SecretPrefix starts every secret, so a leaked one is recognisable by
// secret scanners and in a paste.
const SecretPrefix = "crt_"

// idPrefix is reserved: no name may start with it, so an id and a name
// never collide and Revoke's argument is never ambiguous.
const idPrefix = "tok_"

const fileVersion = 1

// Token is a stored token: never its secret, only the secret's hash.
type Token struct {
	ID      string    `json:"id"`
	Name    string    `json:"name"`
	Scope   Scope     `json:"scope"`
	Hash    string    `json:"hash"` // hex SHA-256 of the secret
	Created time.Time `json:"created"`
}

type tokensFile struct {
	Version int     `json:"version"`
	Tokens  []Token `json:"tokens"`
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// ValidateName checks a token name: it shows up in logs, job records and
// the web page, so it is kept short and plain.
func ValidateName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("token name %q: use 1 to 64 of a-z 0-9 . _ -, starting with a letter or digit", name)
	}
	if strings.HasPrefix(name, idPrefix) {
		return fmt.Errorf("token name %q: names may not start with %q, which marks token ids", name, idPrefix)
	}
	return nil
}

// HashSecret is the stored form of a secret. A plain SHA-256 suffices
// because the secret is 256 random bits: there is nothing to brute-force
// that a slow hash would protect.
func HashSecret(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// Create adds a token named name with the given scope to the file at path
// (creating the file and its directory if needed) and returns its secret,
// which is not stored anywhere.
func Create(path, name string, scope Scope) (string, Token, error) {
	if err := ValidateName(name); err != nil {
		return "", Token{}, err
	}
	if _, err := ParseScope(string(scope)); err != nil {
		return "", Token{}, err
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", Token{}, err
	}
	secret := SecretPrefix + base64.RawURLEncoding.EncodeToString(raw[:])
	var id [6]byte
	if _, err := rand.Read(id[:]); err != nil {
		return "", Token{}, err
	}
	tok := Token{
		ID:      idPrefix + hex.EncodeToString(id[:]),
		Name:    name,
		Scope:   scope,
		Hash:    HashSecret(secret),
		Created: time.Now().UTC().Truncate(time.Second),
	}
	err := update(path, func(toks []Token) ([]Token, error) {
		for _, t := range toks {
			if t.Name == name {
				return nil, fmt.Errorf("a token named %q already exists (%s); revoke it first or pick another name", name, t.ID)
			}
			if t.ID == tok.ID {
				// 48 random bits: only a broken random source gets here.
				return nil, fmt.Errorf("token id %s already in use; try again", tok.ID)
			}
		}
		return append(toks, tok), nil
	})
	if err != nil {
		return "", Token{}, err
	}
	return secret, tok, nil
}

// List returns the tokens in the file, in creation order. A missing file
// has no tokens.
func List(path string) ([]Token, error) {
	return readTokens(path)
}

// Revoke removes the token whose id or name is idOrName. A running agent
// stops accepting it within about a second.
func Revoke(path, idOrName string) error {
	return update(path, func(toks []Token) ([]Token, error) {
		for i, t := range toks {
			if t.ID == idOrName || t.Name == idOrName {
				return append(toks[:i:i], toks[i+1:]...), nil
			}
		}
		return nil, fmt.Errorf("no token with id or name %q in %s", idOrName, path)
	})
}

func readTokens(path string) ([]Token, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return parseTokens(path, b)
}

// parseTokens is strict: a token the agent cannot check is a mistake to
// report, not an entry to skip silently.
func parseTokens(path string, b []byte) ([]Token, error) {
	var f tokensFile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if f.Version != fileVersion {
		return nil, fmt.Errorf("%s: unsupported version %d (this cleanroom reads version %d)", path, f.Version, fileVersion)
	}
	ids := map[string]bool{}
	names := map[string]bool{}
	for i, t := range f.Tokens {
		if t.ID == "" || ids[t.ID] {
			return nil, fmt.Errorf("%s: token %d: missing or duplicate id %q", path, i, t.ID)
		}
		if err := ValidateName(t.Name); err != nil {
			return nil, fmt.Errorf("%s: token %s: %w", path, t.ID, err)
		}
		if names[t.Name] {
			return nil, fmt.Errorf("%s: token %s: duplicate name %q", path, t.ID, t.Name)
		}
		if _, err := ParseScope(string(t.Scope)); err != nil {
			return nil, fmt.Errorf("%s: token %s: %w", path, t.ID, err)
		}
		if h, err := hex.DecodeString(t.Hash); err != nil || len(h) != sha256.Size {
			return nil, fmt.Errorf("%s: token %s: hash is not a hex SHA-256", path, t.ID)
		}
		ids[t.ID], names[t.Name] = true, true
	}
	return f.Tokens, nil
}

// update applies fn to the file's tokens under an exclusive flock on
// PATH.lock, so concurrent `token create` runs (and a create racing a
// revoke) each see the other's result instead of overwriting it.
func update(path string, fn func([]Token) ([]Token, error)) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	// The lock file is never removed: removing it would let a waiter lock
	// the old inode while a newcomer locks a new one.
	lock, err := flock.Acquire(context.Background(), path+".lock", flock.Exclusive)
	if err != nil {
		return err
	}
	defer lock.Release()

	toks, err := readTokens(path)
	if err != nil {
		return err
	}
	toks, err = fn(toks)
	if err != nil {
		return err
	}
	if toks == nil {
		toks = []Token{}
	}
	b, err := json.MarshalIndent(tokensFile{Version: fileVersion, Tokens: toks}, "", "  ")
	if err != nil {
		return err
	}
	// Mode 0600 from the first byte: the hashes are never readable by
	// others, not even for a moment; a revoke survives a crash.
	return atomicfile.WriteFile(path, append(b, '\n'), 0o600)
}
