// Package store is the content-addressed store behind the egress proxy:
// the body of every complete, successful GET a step makes is kept under its
// sha256, with an index from the request (method, URL and the request
// headers that select a representation) to that digest. It is what makes a
// build replayable without the network: a replay serves bodies by the
// digests a provenance lists, and export/import move exactly those bodies
// between machines.
//
// # Layout
//
//	DIR/blobs/sha256/ab/abcdef…   the bodies, read-only files named by digest
//	DIR/index/<key>.json          one Entry per request key (see Key)
//	DIR/tmp/                      bodies and entries being written
//	DIR/lock                      flock(2) held while evicting
//
// # Guarantees
//
//   - Writes are atomic: a body is written to DIR/tmp, its digest checked,
//     and renamed into place; a reader sees a whole blob or none. Two runs
//     storing the same body race harmlessly (same name, same bytes).
//   - Every read is verified: Open hashes the whole blob before handing it
//     out, and a blob whose content does not match its name is deleted and
//     reported as ErrCorrupt, so the caller fetches it again. Corrupted bytes
//     are never served.
//   - The store is bounded: when it grows past Options.MaxBytes the least
//     recently used blobs are deleted (use is recorded by touching a blob's
//     modification time on every read, so no atime mount option is needed),
//     under an exclusive flock so concurrent runs do not evict twice.
//
// The store is safe for concurrent use by goroutines and by processes.
package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cleanroom-ci/cleanroom/internal/flock"
)

// DefaultDir is where the runner keeps the store unless told otherwise. It
// is under /var/lib, not the runtime state directory, because /run is a
// tmpfs: a cache there would not survive a reboot and would cost memory.
const DefaultDir = "/var/lib/cleanroom/cache"

// DefaultMaxBytes bounds a store opened without Options.MaxBytes.
const DefaultMaxBytes int64 = 10 << 30

// ErrCorrupt reports a blob whose content did not match its digest. The
// blob has been removed.
var ErrCorrupt = errors.New("store: blob content does not match its digest (removed)")

// ErrNotFound reports a digest or key the store does not hold.
var ErrNotFound = errors.New("store: not found")

// KeyHeaders are the request headers that select which representation of a
// URL a server returns, and so belong to the index key. The content coding
// is not part of the key: an entry records the Content-Encoding its body
// has (bodies are kept byte for byte, never decompressed), and a reader
// serves it only to a request that accepts that coding.
var KeyHeaders = []string{"Accept"}

// Options configures Open.
type Options struct {
	// MaxBytes bounds the total size of the blobs (default
	// DefaultMaxBytes). Eviction brings the store down to 90% of it.
	MaxBytes int64
}

// Store is a content-addressed store in a directory.
type Store struct {
	dir string
	max int64

	mu    sync.Mutex   // one eviction at a time in this process
	total atomic.Int64 // estimate of the blobs' size, corrected on eviction
}

// Open opens (creating if needed) the store in dir.
func Open(dir string, opts Options) (*Store, error) {
	if dir == "" {
		return nil, errors.New("store: empty directory")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	// The store's root is private to its owner: index entries hold the
	// URLs steps fetched, which may carry tokens in their query.
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	for _, d := range []string{filepath.Join(abs, "blobs", "sha256"), filepath.Join(abs, "index"), filepath.Join(abs, "tmp")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
	}
	s := &Store{dir: abs, max: opts.MaxBytes}
	if s.max <= 0 {
		s.max = DefaultMaxBytes
	}
	total, err := s.size()
	if err != nil {
		return nil, err
	}
	s.total.Store(total)
	s.cleanTmp()
	return s, nil
}

// Dir returns the store's directory.
func (s *Store) Dir() string { return s.dir }

// MaxBytes returns the size bound.
func (s *Store) MaxBytes() int64 { return s.max }

// ValidDigest reports whether d is a lowercase hex sha256.
func ValidDigest(d string) bool {
	if len(d) != 64 {
		return false
	}
	for i := 0; i < len(d); i++ {
		c := d[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

func (s *Store) blobPath(digest string) string {
	return filepath.Join(s.dir, "blobs", "sha256", digest[:2], digest)
}

// Has reports whether a blob is present (without verifying it).
func (s *Store) Has(digest string) bool {
	if !ValidDigest(digest) {
		return false
	}
	_, err := os.Stat(s.blobPath(digest))
	return err == nil
}

// Blob is a verified blob, open for reading from its start.
type Blob struct {
	*os.File
	SHA256 string
	Size   int64
}

// Open returns the blob with the given digest after hashing it whole. A
// blob that does not match is removed and ErrCorrupt returned; a missing
// one is ErrNotFound. Opening marks the blob as used for eviction.
func (s *Store) Open(digest string) (*Blob, error) {
	if !ValidDigest(digest) {
		return nil, fmt.Errorf("store: invalid digest %q", digest)
	}
	p := s.blobPath(digest)
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("store: read %s: %w", digest, err)
	}
	if hex.EncodeToString(h.Sum(nil)) != digest {
		f.Close()
		s.discard(p, n)
		return nil, fmt.Errorf("%w: sha256:%s", ErrCorrupt, digest)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, fmt.Errorf("store: %w", err)
	}
	now := time.Now()
	_ = os.Chtimes(p, now, now) // LRU: a read is a use
	return &Blob{File: f, SHA256: digest, Size: n}, nil
}

// discard removes a blob that failed verification. Only a file that is
// still the one we read is removed: a good copy renamed into place
// meanwhile by another writer stays.
func (s *Store) discard(p string, size int64) {
	f, err := os.Open(p)
	if err != nil {
		return
	}
	defer f.Close()
	h := sha256.New()
	io.Copy(h, f)
	if hex.EncodeToString(h.Sum(nil)) != filepath.Base(p) {
		if os.Remove(p) == nil {
			s.total.Add(-size)
		}
	}
}

// Writer streams a body into the store. Nothing is visible until Commit.
type Writer struct {
	s    *Store
	f    *os.File
	h    hash.Hash
	n    int64
	err  error
	done bool
}

// NewWriter starts a new blob.
func (s *Store) NewWriter() (*Writer, error) {
	f, err := os.CreateTemp(filepath.Join(s.dir, "tmp"), "blob-*")
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	return &Writer{s: s, f: f, h: sha256.New()}, nil
}

// Write implements io.Writer. After a failed write, the writer keeps
// failing and Commit reports the first error.
func (w *Writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	n, err := w.f.Write(p)
	w.h.Write(p[:n])
	w.n += int64(n)
	if err != nil {
		w.err = err
	}
	return n, err
}

// Size returns the bytes written so far.
func (w *Writer) Size() int64 { return w.n }

// Commit makes the blob visible under its digest and returns it. If want
// is not empty, the digest must equal it (a body that arrived differently
// than it was hashed elsewhere is not stored).
func (w *Writer) Commit(want string) (string, error) {
	if w.done {
		return "", errors.New("store: writer already finished")
	}
	w.done = true
	tmp := w.f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if w.err != nil {
		w.f.Close()
		return "", fmt.Errorf("store: write: %w", w.err)
	}
	digest := hex.EncodeToString(w.h.Sum(nil))
	if want != "" && want != digest {
		w.f.Close()
		return "", fmt.Errorf("store: body hashes to %s, expected %s", digest, want)
	}
	// No fsync: a blob that a crash leaves short or empty fails the
	// verification every read does, and is then discarded like any other
	// corrupt blob. Syncing every body would cost more than the cache
	// saves.
	if err := w.f.Chmod(0o444); err != nil {
		w.f.Close()
		return "", fmt.Errorf("store: %w", err)
	}
	if err := w.f.Close(); err != nil {
		return "", fmt.Errorf("store: %w", err)
	}
	dst := w.s.blobPath(digest)
	_, statErr := os.Stat(dst)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return "", fmt.Errorf("store: %w", err)
	}
	// Replacing an existing copy is harmless (same name, verified bytes)
	// and heals one that was damaged on disk; readers holding the old
	// file keep reading the old inode.
	if err := os.Rename(tmp, dst); err != nil {
		return "", fmt.Errorf("store: %w", err)
	}
	added := w.n
	if statErr == nil {
		added = 0
	}
	if w.s.total.Add(added) > w.s.max {
		if err := w.s.Evict(); err != nil {
			return digest, err
		}
	}
	return digest, nil
}

// Abort discards the blob.
func (w *Writer) Abort() {
	if w.done {
		return
	}
	w.done = true
	w.f.Close()
	os.Remove(w.f.Name())
}

// Put stores r as a blob and returns its digest (checked against want
// when not empty).
func (s *Store) Put(r io.Reader, want string) (string, error) {
	w, err := s.NewWriter()
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(w, r); err != nil {
		w.Abort()
		return "", err
	}
	return w.Commit(want)
}

// Entry is one index record: a request and the digest of the body it got.
type Entry struct {
	Method string `json:"method"`
	URL    string `json:"url"`
	// Header holds the KeyHeaders the request carried, canonical names.
	Header      map[string]string `json:"header,omitempty"`
	SHA256      string            `json:"sha256"`
	Size        int64             `json:"size"`
	ContentType string            `json:"contentType,omitempty"`
	// ContentEncoding is the coding of the body as kept ("gzip", …).
	ContentEncoding string    `json:"contentEncoding,omitempty"`
	Stored          time.Time `json:"stored"`
}

// AcceptsEncoding reports whether a request with header h may be answered
// with this entry's body.
func (e Entry) AcceptsEncoding(h http.Header) bool {
	if e.ContentEncoding == "" || strings.EqualFold(e.ContentEncoding, "identity") {
		return true
	}
	for _, v := range h.Values("Accept-Encoding") {
		for _, c := range strings.Split(v, ",") {
			c, params, _ := strings.Cut(strings.TrimSpace(c), ";")
			if !strings.EqualFold(strings.TrimSpace(c), e.ContentEncoding) && strings.TrimSpace(c) != "*" {
				continue
			}
			q := 1.0
			for p := range strings.SplitSeq(params, ";") {
				if k, v, ok := strings.Cut(strings.TrimSpace(p), "="); ok && strings.EqualFold(k, "q") {
					if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
						q = f
					}
				}
			}
			if q > 0 {
				return true
			}
		}
	}
	return false
}

// Key is the index key of a request: sha256 over the method, the URL and
// the KeyHeaders it carries, so that two representations of one URL
// (say, Accept: application/json vs text/html) never share an entry.
func Key(method, url string, h http.Header) string {
	hh := sha256.New()
	fmt.Fprintf(hh, "%s\n%s\n", strings.ToUpper(method), url)
	for _, k := range KeyHeaders {
		fmt.Fprintf(hh, "%s: %s\n", k, strings.Join(h.Values(k), ", "))
	}
	return hex.EncodeToString(hh.Sum(nil))
}

// KeyHeaderMap extracts the KeyHeaders of h for an Entry.
func KeyHeaderMap(h http.Header) map[string]string {
	var m map[string]string
	for _, k := range KeyHeaders {
		if v := h.Values(k); len(v) > 0 {
			if m == nil {
				m = map[string]string{}
			}
			m[k] = strings.Join(v, ", ")
		}
	}
	return m
}

func (e Entry) key() string {
	h := http.Header{}
	for k, v := range e.Header {
		h.Set(k, v)
	}
	return Key(e.Method, e.URL, h)
}

func (s *Store) indexPath(key string) string {
	return filepath.Join(s.dir, "index", key+".json")
}

// PutEntry records an index entry, replacing any for the same key.
func (s *Store) PutEntry(e Entry) error {
	if !ValidDigest(e.SHA256) {
		return fmt.Errorf("store: entry for %s has invalid digest %q", e.URL, e.SHA256)
	}
	if e.Method == "" {
		e.Method = http.MethodGet
	}
	if e.Stored.IsZero() {
		e.Stored = time.Now().UTC()
	}
	data, err := json.Marshal(e)
	if err != nil {
		return err
	}
	return s.writeAtomic(s.indexPath(e.key()), data)
}

// Lookup returns the index entry for a request.
func (s *Store) Lookup(method, url string, h http.Header) (Entry, error) {
	return s.readEntry(s.indexPath(Key(method, url, h)))
}

func (s *Store) readEntry(p string) (Entry, error) {
	data, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return Entry{}, ErrNotFound
	}
	if err != nil {
		return Entry{}, fmt.Errorf("store: %w", err)
	}
	var e Entry
	if err := json.Unmarshal(data, &e); err != nil || !ValidDigest(e.SHA256) {
		os.Remove(p) // a damaged entry is only a cache miss
		return Entry{}, ErrNotFound
	}
	return e, nil
}

// DeleteEntry removes the entry for a request, if any.
func (s *Store) DeleteEntry(method, url string, h http.Header) {
	os.Remove(s.indexPath(Key(method, url, h)))
}

// Entries returns every index entry, sorted by URL then method.
func (s *Store) Entries() ([]Entry, error) {
	ents, err := os.ReadDir(filepath.Join(s.dir, "index"))
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	var out []Entry
	for _, de := range ents {
		if !strings.HasSuffix(de.Name(), ".json") {
			continue
		}
		e, err := s.readEntry(filepath.Join(s.dir, "index", de.Name()))
		if err == nil {
			out = append(out, e)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].URL != out[j].URL {
			return out[i].URL < out[j].URL
		}
		return out[i].Method < out[j].Method
	})
	return out, nil
}

// EntriesFor returns the entries whose URL is url.
func (s *Store) EntriesFor(url string) ([]Entry, error) {
	all, err := s.Entries()
	if err != nil {
		return nil, err
	}
	var out []Entry
	for _, e := range all {
		if e.URL == url {
			out = append(out, e)
		}
	}
	return out, nil
}

// writeAtomic writes data to path through a temporary file and a rename.
func (s *Store) writeAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Join(s.dir, "tmp"), "entry-*")
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("store: %w", err)
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return fmt.Errorf("store: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return nil
}

type blobInfo struct {
	path  string
	size  int64
	mtime time.Time
}

func (s *Store) blobs() ([]blobInfo, error) {
	var out []blobInfo
	root := filepath.Join(s.dir, "blobs", "sha256")
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // evicted under our feet
			}
			return err
		}
		if d.IsDir() || !ValidDigest(d.Name()) {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		out = append(out, blobInfo{path: p, size: fi.Size(), mtime: fi.ModTime()})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	return out, nil
}

func (s *Store) size() (int64, error) {
	bs, err := s.blobs()
	if err != nil {
		return 0, err
	}
	var total int64
	for _, b := range bs {
		total += b.size
	}
	return total, nil
}

// Size returns the blobs' total size, measured now.
func (s *Store) Size() (int64, error) { return s.size() }

// Evict deletes least recently used blobs until the store is at most 90%
// of MaxBytes. It holds an exclusive flock on DIR/lock meanwhile, so
// concurrent runs evict one at a time; it re-measures the store under the
// lock, so what other processes stored counts too.
func (s *Store) Evict() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	lock, err := flock.Acquire(context.Background(), filepath.Join(s.dir, "lock"), flock.Exclusive)
	if err != nil {
		return fmt.Errorf("store: lock: %w", err)
	}
	defer lock.Release()
	bs, err := s.blobs()
	if err != nil {
		return err
	}
	var total int64
	for _, b := range bs {
		total += b.size
	}
	target := s.max / 10 * 9
	if total > s.max {
		sort.Slice(bs, func(i, j int) bool { return bs[i].mtime.Before(bs[j].mtime) })
		for _, b := range bs {
			if total <= target {
				break
			}
			if err := os.Remove(b.path); err == nil || errors.Is(err, fs.ErrNotExist) {
				total -= b.size
			}
		}
	}
	s.total.Store(total)
	return nil
}

// cleanTmp removes temporary files older than a day: what a killed run
// left behind. Younger ones may belong to a run in progress.
func (s *Store) cleanTmp() {
	dir := filepath.Join(s.dir, "tmp")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	cutoff := time.Now().Add(-24 * time.Hour)
	for _, de := range ents {
		if fi, err := de.Info(); err == nil && fi.ModTime().Before(cutoff) {
			os.Remove(filepath.Join(dir, de.Name()))
		}
	}
}
