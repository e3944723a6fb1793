package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func openT(t *testing.T, dir string, max int64) *Store {
	t.Helper()
	s, err := Open(dir, Options{MaxBytes: max})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func readBlob(t *testing.T, s *Store, d string) []byte {
	t.Helper()
	b, err := s.Open(d)
	if err != nil {
		t.Fatalf("Open %s: %v", d, err)
	}
	defer b.Close()
	data, err := io.ReadAll(b)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestPutOpenRoundTrip(t *testing.T) {
	s := openT(t, t.TempDir(), 0)
	body := bytes.Repeat([]byte("module zip bytes "), 1000)
	d, err := s.Put(bytes.NewReader(body), sum(body))
	if err != nil {
		t.Fatal(err)
	}
	if d != sum(body) || !s.Has(d) {
		t.Fatalf("digest %s, has %v", d, s.Has(d))
	}
	if got := readBlob(t, s, d); !bytes.Equal(got, body) {
		t.Fatal("content differs")
	}
	fi, err := os.Stat(s.blobPath(d))
	if err != nil || fi.Mode().Perm() != 0o444 {
		t.Fatalf("blob mode %v, %v", fi.Mode(), err)
	}
	if _, err := s.Open(sum([]byte("other"))); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing blob: %v", err)
	}
	if _, err := s.Open("../../etc/passwd"); err == nil {
		t.Fatal("invalid digest accepted")
	}
}

func TestCommitChecksExpectedDigest(t *testing.T) {
	s := openT(t, t.TempDir(), 0)
	if _, err := s.Put(bytes.NewReader([]byte("abc")), sum([]byte("abd"))); err == nil {
		t.Fatal("a body with the wrong digest was stored")
	}
	if s.Has(sum([]byte("abc"))) || s.Has(sum([]byte("abd"))) {
		t.Fatal("blob present after a failed commit")
	}
	ents, _ := os.ReadDir(filepath.Join(s.Dir(), "tmp"))
	if len(ents) != 0 {
		t.Fatalf("temporary files left: %v", ents)
	}
	w, _ := s.NewWriter()
	w.Write([]byte("partial"))
	w.Abort()
	ents, _ = os.ReadDir(filepath.Join(s.Dir(), "tmp"))
	if len(ents) != 0 {
		t.Fatalf("aborted write left %v", ents)
	}
}

// A blob damaged on disk is detected on read, removed, and never served;
// storing it again heals the store.
func TestCorruptedBlobIsDiscardedNotServed(t *testing.T) {
	s := openT(t, t.TempDir(), 0)
	body := []byte("the real dependency")
	d, err := s.Put(bytes.NewReader(body), "")
	if err != nil {
		t.Fatal(err)
	}
	p := s.blobPath(d)
	os.Chmod(p, 0o644)
	if err := os.WriteFile(p, []byte("the evil dependency"), 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := s.Open(d)
	if !errors.Is(err, ErrCorrupt) || b != nil {
		t.Fatalf("Open of a corrupted blob: %v (blob %v)", err, b)
	}
	if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("corrupted blob still on disk: %v", err)
	}
	if _, err := s.Open(d); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second open: %v", err)
	}
	// Truncation is corruption too.
	if _, err := s.Put(bytes.NewReader(body), d); err != nil {
		t.Fatal(err)
	}
	os.Truncate(p, 3)
	if _, err := s.Open(d); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("truncated blob: %v", err)
	}
	if _, err := s.Put(bytes.NewReader(body), d); err != nil {
		t.Fatal(err)
	}
	if got := readBlob(t, s, d); !bytes.Equal(got, body) {
		t.Fatal("store not healed by a fresh put")
	}
}

func TestIndexKeysIncludeRepresentationHeaders(t *testing.T) {
	s := openT(t, t.TempDir(), 0)
	js, html := []byte(`{"v":1}`), []byte("<p>v1</p>")
	dj, _ := s.Put(bytes.NewReader(js), "")
	dh, _ := s.Put(bytes.NewReader(html), "")
	hj := http.Header{"Accept": {"application/json"}}
	hh := http.Header{"Accept": {"text/html"}}
	const u = "https://deps.example.test/pkg"
	if err := s.PutEntry(Entry{Method: "GET", URL: u, Header: KeyHeaderMap(hj), SHA256: dj, Size: int64(len(js))}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutEntry(Entry{Method: "GET", URL: u, Header: KeyHeaderMap(hh), SHA256: dh, Size: int64(len(html))}); err != nil {
		t.Fatal(err)
	}
	e, err := s.Lookup("GET", u, hj)
	if err != nil || e.SHA256 != dj {
		t.Fatalf("json lookup: %+v %v", e, err)
	}
	e, err = s.Lookup("GET", u, hh)
	if err != nil || e.SHA256 != dh {
		t.Fatalf("html lookup: %+v %v", e, err)
	}
	if _, err := s.Lookup("GET", u, http.Header{}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("lookup without Accept: %v", err)
	}
	if _, err := s.Lookup("HEAD", u, hj); !errors.Is(err, ErrNotFound) {
		t.Fatalf("other method: %v", err)
	}
	all, _ := s.EntriesFor(u)
	if len(all) != 2 {
		t.Fatalf("entries for %s: %+v", u, all)
	}
	// A damaged entry is a miss, not an error.
	os.WriteFile(s.indexPath(Key("GET", u, hj)), []byte("{garbage"), 0o644)
	if _, err := s.Lookup("GET", u, hj); !errors.Is(err, ErrNotFound) {
		t.Fatalf("damaged entry: %v", err)
	}
}

func TestEvictionRemovesLeastRecentlyUsed(t *testing.T) {
	s := openT(t, t.TempDir(), 1000)
	var ds []string
	for i := range 3 {
		b := bytes.Repeat([]byte{byte('a' + i)}, 300)
		d, err := s.Put(bytes.NewReader(b), "")
		if err != nil {
			t.Fatal(err)
		}
		old := time.Now().Add(time.Duration(i-10) * time.Minute)
		os.Chtimes(s.blobPath(d), old, old)
		ds = append(ds, d)
	}
	// Reading the oldest makes it the most recently used.
	readBlob(t, s, ds[0])
	// 4×300 > 1000: the least recently used (ds[1]) must go, and the
	// store must end at most 900 bytes.
	d4, err := s.Put(bytes.NewReader(bytes.Repeat([]byte("z"), 300)), "")
	if err != nil {
		t.Fatal(err)
	}
	if s.Has(ds[1]) {
		t.Fatal("least recently used blob survived")
	}
	for _, d := range []string{ds[0], d4} {
		if !s.Has(d) {
			t.Fatalf("recently used blob %s evicted", d[:8])
		}
	}
	if n, _ := s.Size(); n > 900 {
		t.Fatalf("store is %d bytes after eviction, want ≤ 900", n)
	}
}

// Many writers storing overlapping bodies at once, in goroutines and in
// separate processes, leave every blob whole and verifiable, and no
// temporary files behind.
func TestConcurrentWritersGoroutinesAndProcesses(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, 0)
	bodies := make([][]byte, 8)
	for i := range bodies {
		bodies[i] = bytes.Repeat([]byte(fmt.Sprintf("body %d ", i)), 20000+i)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range bodies {
				b := bodies[(i+g)%len(bodies)]
				d, err := s.Put(bytes.NewReader(b), sum(b))
				if err != nil {
					errs <- err
					return
				}
				if err := s.PutEntry(Entry{Method: "GET", URL: "http://x.test/" + strconv.Itoa((i+g)%len(bodies)), SHA256: d, Size: int64(len(b))}); err != nil {
					errs <- err
					return
				}
				blob, err := s.Open(d)
				if err != nil {
					errs <- err
					return
				}
				got, _ := io.ReadAll(blob)
				blob.Close()
				if !bytes.Equal(got, b) {
					errs <- fmt.Errorf("read back %d bytes, want %d", len(got), len(b))
					return
				}
			}
		}()
	}
	var procs []*exec.Cmd
	for range 3 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcessWriter$")
		cmd.Env = append(os.Environ(), "STORE_HELPER_DIR="+dir)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		procs = append(procs, cmd)
	}
	wg.Wait()
	for _, p := range procs {
		if err := p.Wait(); err != nil {
			t.Fatalf("helper process: %v", err)
		}
	}
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, b := range bodies {
		if got := readBlob(t, s, sum(b)); !bytes.Equal(got, b) {
			t.Fatal("blob differs after concurrent writes")
		}
	}
	helper := helperBody()
	if got := readBlob(t, s, sum(helper)); !bytes.Equal(got, helper) {
		t.Fatal("blob written by the helper processes differs")
	}
	ents, _ := os.ReadDir(filepath.Join(dir, "tmp"))
	if len(ents) != 0 {
		t.Fatalf("temporary files left: %d", len(ents))
	}
	all, _ := s.Entries()
	if len(all) != len(bodies)+1 {
		t.Fatalf("%d index entries, want %d", len(all), len(bodies)+1)
	}
}

func helperBody() []byte { return bytes.Repeat([]byte("from another process "), 50000) }

// TestHelperProcessWriter is run as a child by the concurrency test.
func TestHelperProcessWriter(t *testing.T) {
	dir := os.Getenv("STORE_HELPER_DIR")
	if dir == "" {
		t.Skip("helper process only")
	}
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	b := helperBody()
	for range 20 {
		d, err := s.Put(bytes.NewReader(b), sum(b))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.PutEntry(Entry{Method: "GET", URL: "http://helper.test/blob", SHA256: d, Size: int64(len(b))}); err != nil {
			t.Fatal(err)
		}
		blob, err := s.Open(d)
		if err != nil {
			t.Fatal(err)
		}
		blob.Close()
	}
}

// Concurrent eviction from several stores on one directory never deletes
// more than needed twice over, and never leaves a half-written blob.
func TestConcurrentEviction(t *testing.T) {
	dir := t.TempDir()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := Open(dir, Options{MaxBytes: 20000})
			if err != nil {
				t.Error(err)
				return
			}
			for i := range 30 {
				b := bytes.Repeat([]byte(fmt.Sprintf("%d-%d;", g, i)), 200)
				if _, err := s.Put(bytes.NewReader(b), ""); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	s := openT(t, dir, 20000)
	if err := s.Evict(); err != nil {
		t.Fatal(err)
	}
	bs, _ := s.blobs()
	for _, b := range bs {
		if _, err := s.Open(filepath.Base(b.path)); err != nil {
			t.Fatalf("blob %s: %v", filepath.Base(b.path), err)
		}
	}
	if n, _ := s.Size(); n > 20000 {
		t.Fatalf("store is %d bytes, bound 20000", n)
	}
}

func TestEntryAcceptsEncoding(t *testing.T) {
	gz := Entry{ContentEncoding: "gzip"}
	for h, want := range map[string]bool{
		"":                  false,
		"gzip":              true,
		"br, GZIP;q=0.5":    true,
		"gzip;q=0":          false,
		"*":                 true,
		"deflate, identity": false,
	} {
		hh := http.Header{}
		if h != "" {
			hh.Set("Accept-Encoding", h)
		}
		if got := gz.AcceptsEncoding(hh); got != want {
			t.Errorf("Accept-Encoding %q: %v, want %v", h, got, want)
		}
	}
	if !(Entry{}).AcceptsEncoding(http.Header{}) {
		t.Error("identity body refused")
	}
}
