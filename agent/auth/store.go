package auth

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"os"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// reloadInterval bounds how often Authenticate looks at the file: often
// enough that a revoke takes effect at once for a person, rarely enough
// that a flood of requests does not become a flood of stat calls.
const reloadInterval = time.Second

// Store is the agent's view of the tokens file. It follows the file, so
// `token create` and `token revoke` take effect without a restart.
type Store struct {
	path     string
	interval time.Duration
	now      func() time.Time

	mu      sync.Mutex
	log     hclog.Logger
	tokens  []storedToken
	checked time.Time
	stamp   fs.FileInfo // the file last looked at (loaded or not); nil if missing
	lastErr string      // the reload error last reported, so it is reported once
}

type storedToken struct {
	tok  Token
	hash [sha256.Size]byte
}

// OpenStore loads the tokens file. A missing file is no tokens: the agent
// runs and refuses every request until a token is created. A file that
// exists but cannot be read or parsed is an error, so a broken
// configuration is seen at start rather than as a wall of 401s.
func OpenStore(path string) (*Store, error) {
	s := &Store{path: path, interval: reloadInterval, now: time.Now}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		s.checked = s.now()
		return s, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, toks, err := load(path, f)
	if err != nil {
		return nil, err
	}
	s.tokens, s.stamp, s.checked = toks, fi, s.now()
	return s, nil
}

// SetLogger sets where reload events and errors go; without one they are
// dropped. Nothing logged contains a secret or a hash.
func (s *Store) SetLogger(l hclog.Logger) {
	s.mu.Lock()
	s.log = l
	s.mu.Unlock()
}

// Path is the file the store follows.
func (s *Store) Path() string { return s.path }

// Len is the number of tokens currently accepted; an agent can warn at
// start when it is 0.
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refreshLocked()
	return len(s.tokens)
}

// Authenticate returns the token whose secret is secret. Every stored hash
// is compared, in constant time, whatever matches: how long it takes tells
// nothing about which token, or how much of a hash, matched.
func (s *Store) Authenticate(secret string) (Token, bool) {
	if s == nil || secret == "" {
		return Token{}, false
	}
	s.mu.Lock()
	s.refreshLocked()
	toks := s.tokens // replaced, never modified in place, so safe to read unlocked
	s.mu.Unlock()

	h := sha256.Sum256([]byte(secret))
	found, idx := 0, 0
	for i := range toks {
		eq := subtle.ConstantTimeCompare(h[:], toks[i].hash[:])
		idx = subtle.ConstantTimeSelect(eq, i, idx)
		found |= eq
	}
	if found != 1 {
		return Token{}, false
	}
	return toks[idx].tok, true
}

// refreshLocked re-reads the file if it changed since it was last looked
// at, at most once per interval. A file that fails to load keeps the
// tokens in force: half-edited JSON must not lock everyone out, and must
// not let anyone in either.
func (s *Store) refreshLocked() {
	now := s.now()
	if now.Sub(s.checked) < s.interval {
		return
	}
	s.checked = now
	f, err := os.Open(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		if s.stamp != nil {
			// Removing the file revokes everything, as documented.
			s.tokens, s.stamp, s.lastErr = nil, nil, ""
			s.logf(hclog.Warn, "tokens file removed: every request is refused until a token is created", "path", s.path)
		}
		return
	}
	if err != nil {
		s.reportLocked(err)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		s.reportLocked(err)
		return
	}
	// Inode too, not just mtime and size: `token create` replaces the file
	// by rename, and two same-size writes can share a coarse mtime.
	if s.stamp != nil && os.SameFile(fi, s.stamp) && fi.ModTime().Equal(s.stamp.ModTime()) && fi.Size() == s.stamp.Size() {
		return
	}
	s.stamp = fi // also for a broken file, so it is parsed again only when it changes
	_, toks, err := load(s.path, f)
	if err != nil {
		s.reportLocked(err)
		return
	}
	s.tokens, s.lastErr = toks, ""
	s.logf(hclog.Info, "tokens file reloaded", "path", s.path, "tokens", len(toks))
}

func (s *Store) reportLocked(err error) {
	if msg := err.Error(); msg != s.lastErr {
		s.lastErr = msg
		s.logf(hclog.Error, "cannot reload the tokens file; the tokens loaded before stay in force", "path", s.path, "error", err)
	}
}

func (s *Store) logf(level hclog.Level, msg string, args ...any) {
	if s.log != nil {
		s.log.Log(level, msg, args...)
	}
}

func load(path string, f *os.File) (fs.FileInfo, []storedToken, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, nil, err
	}
	toks, err := parseTokens(path, b)
	if err != nil {
		return nil, nil, err
	}
	out := make([]storedToken, len(toks))
	for i, t := range toks {
		out[i].tok = t
		hex.Decode(out[i].hash[:], []byte(t.Hash)) // checked by parseTokens
	}
	return fi, out, nil
}
