package egress

import (
	"bufio"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"

	"github.com/cleanroom-ci/cleanroom/sandbox/egress/store"
)

// CacheMode says how the proxy uses its Store.
type CacheMode int

const (
	// CacheRecord (the default) writes every complete 200 GET body to the
	// store and never answers from it.
	CacheRecord CacheMode = iota
	// CachePrefer also answers requests for immutable URLs from the store
	// without contacting upstream: module proxy .zip/.mod/.info files of a
	// version and npm tarballs (/-/*.tgz), whose content never changes.
	CachePrefer
	// CacheOff neither writes nor reads the store.
	CacheOff
)

func (m CacheMode) String() string {
	switch m {
	case CacheRecord:
		return "record"
	case CachePrefer:
		return "prefer"
	case CacheOff:
		return "off"
	}
	return fmt.Sprintf("CacheMode(%d)", int(m))
}

// ParseCacheMode parses "record", "prefer" or "off" ("" is record).
func ParseCacheMode(s string) (CacheMode, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "record":
		return CacheRecord, nil
	case "prefer":
		return CachePrefer, nil
	case "off":
		return CacheOff, nil
	}
	return 0, fmt.Errorf("egress cache mode %q: want \"record\", \"prefer\" or \"off\"", s)
}

// Materials are the bodies a replay may serve: the fetches a provenance
// recorded, by URL and, for module proxy files, by module, version and
// file, so that a recorded fetch is found even if the module proxy's
// address or its redirects differ.
type Materials struct {
	byURL    map[string]string
	byModule map[[3]string]string
	n        int
	// Normalize, when set, maps a URL to the form the provenance records
	// it in (e.g. with credentials redacted from its query), for requests
	// whose exact URL is not listed.
	Normalize func(string) string
}

// NewMaterials returns an empty set.
func NewMaterials() *Materials {
	return &Materials{byURL: map[string]string{}, byModule: map[[3]string]string{}}
}

// Add records that url answered with the body of digest sha256. module
// and version are set for module proxy fetches. The first digest recorded
// for a URL wins.
func (m *Materials) Add(rawURL, sha256, module, version string) {
	if !store.ValidDigest(sha256) {
		return
	}
	if _, ok := m.byURL[rawURL]; !ok {
		m.byURL[rawURL] = sha256
		m.n++
	}
	if module != "" && version != "" {
		if kind := goModFileKind(rawURL); kind != "" {
			k := [3]string{module, version, kind}
			if _, ok := m.byModule[k]; !ok {
				m.byModule[k] = sha256
			}
		}
	}
}

// Len returns the number of URLs.
func (m *Materials) Len() int { return m.n }

func (m *Materials) lookup(rawURL string, gm *goModRequest) (string, bool) {
	if d, ok := m.byURL[rawURL]; ok {
		return d, true
	}
	if m.Normalize != nil {
		if d, ok := m.byURL[m.Normalize(rawURL)]; ok {
			return d, true
		}
	}
	if gm != nil && gm.version != "" && gm.upstream != nil {
		if kind := goModFileKind(gm.upstream.Path); kind != "" {
			d, ok := m.byModule[[3]string{gm.module, gm.version, kind}]
			return d, ok
		}
	}
	return "", false
}

// goModFileKind returns ".zip", ".mod" or ".info" for a module proxy
// version file URL or path, "" for anything else.
func goModFileKind(s string) string {
	if u, err := url.Parse(s); err == nil && u.Path != "" {
		s = u.Path
	}
	if !strings.Contains(s, "/@v/") {
		return ""
	}
	for _, k := range []string{".zip", ".mod", ".info"} {
		if strings.HasSuffix(s, k) {
			return k
		}
	}
	return ""
}

// IsNPMTarball reports whether a URL looks like an npm registry tarball
// (…/<name>/-/<name>-<version>.tgz).
func IsNPMTarball(rawURL string) bool {
	p := rawURL
	if u, err := url.Parse(rawURL); err == nil {
		p = u.Path
	}
	return strings.Contains(p, "/-/") && strings.HasSuffix(p, ".tgz")
}

// immutable reports whether a URL's content can never change, so that a
// stored copy may answer without asking upstream.
func immutable(rawURL string, gm *goModRequest) bool {
	if gm != nil {
		return gm.version != "" && goModFileKind(gm.upstream.Path) != ""
	}
	return IsNPMTarball(rawURL)
}

// storedHit is a verified body ready to serve.
type storedHit struct {
	blob                     *store.Blob
	contentType, contentCode string
	source                   string // "cache" or "replay"
}

// lookupStored decides whether a request is answered from the store. It
// returns a hit, or a denial reason (offline runs only), or neither (go
// upstream). gm is set for module proxy requests.
func (p *Proxy) lookupStored(method, rawURL string, h http.Header, gm *goModRequest) (*storedHit, string) {
	st := p.cfg.Store
	if st == nil || (p.cfg.Cache == CacheOff && !p.cfg.Offline) {
		return nil, ""
	}
	if method != http.MethodGet && method != http.MethodHead {
		if p.cfg.Offline {
			return nil, fmt.Sprintf("offline run: %s %s cannot be replayed (only GET and HEAD answers are recorded)", method, clip(rawURL))
		}
		return nil, ""
	}
	meta := func(digest string) (string, string) {
		if e, err := st.Lookup(http.MethodGet, rawURL, h); err == nil && e.SHA256 == digest {
			return e.ContentType, e.ContentEncoding
		}
		return "", ""
	}
	if p.cfg.Replay != nil {
		digest, ok := p.cfg.Replay.lookup(rawURL, gm)
		if !ok {
			if p.cfg.Offline {
				return nil, fmt.Sprintf("%s is not in the recorded materials: the provenance being replayed lists no such fetch", clip(rawURL))
			}
		} else {
			b, err := st.Open(digest)
			if err == nil {
				ct, ce := meta(digest)
				return &storedHit{blob: b, contentType: ct, contentCode: ce, source: "replay"}, ""
			}
			if p.cfg.Offline {
				return nil, fmt.Sprintf("recorded material %s (sha256:%s) is not in the store %s (%v); copy it with `cleanroom export-materials` and `cleanroom import-materials`",
					clip(rawURL), digest, st.Dir(), err)
			}
		}
	}
	if !p.cfg.Offline && (p.cfg.Cache != CachePrefer || !immutable(rawURL, gm)) {
		return nil, ""
	}
	e, err := st.Lookup(http.MethodGet, rawURL, h)
	if err == nil && e.AcceptsEncoding(h) {
		b, oerr := st.Open(e.SHA256)
		if oerr == nil {
			return &storedHit{blob: b, contentType: e.ContentType, contentCode: e.ContentEncoding, source: "cache"}, ""
		}
		if errors.Is(oerr, store.ErrCorrupt) {
			p.log.Warn("cache: stored body failed verification; discarded", "url", rawURL, "sha256", e.SHA256)
		}
		st.DeleteEntry(http.MethodGet, rawURL, h)
	}
	if p.cfg.Offline {
		return nil, fmt.Sprintf("%s is not in the local cache (offline run)", clip(rawURL))
	}
	return nil, ""
}

// serveHitRaw answers a plain-HTTP (forward or /gomod/) request from the
// store. It fills ev and reports whether the connection may be reused.
func (p *Proxy) serveHitRaw(bw *bufio.Writer, req *http.Request, hit *storedHit, ev *Event) bool {
	defer hit.blob.Close()
	ev.Status, ev.Source, ev.Reason = http.StatusOK, hit.source, "served from the store ("+hit.source+")"
	keep := !req.Close && !p.closing.Load()
	bw.WriteString("HTTP/1.1 200 OK\r\n")
	bw.WriteString("Content-Type: " + hitContentType(hit) + "\r\n")
	if ce := hit.contentCode; ce != "" && isToken(ce) {
		bw.WriteString("Content-Encoding: " + ce + "\r\n")
	}
	bw.WriteString("Content-Length: " + strconv.FormatInt(hit.blob.Size, 10) + "\r\n")
	bw.WriteString("X-Cleanroom-Source: " + hit.source + "\r\n")
	if !keep {
		bw.WriteString("Connection: close\r\n")
	}
	bw.WriteString("\r\n")
	if req.Method == http.MethodHead {
		if err := bw.Flush(); err != nil {
			return false
		}
		return keep
	}
	sink := p.hitSink(ev)
	n, rerr, werr := copyStream(bw, hit.blob, sink, nil)
	ev.BytesIn = n
	if werr == nil {
		werr = bw.Flush()
	}
	if rerr != nil || werr != nil || n != hit.blob.Size {
		ev.Reason = fmt.Sprintf("serving from the store failed after %d bytes: %v", n, errors.Join(rerr, werr))
		return false
	}
	sink.finish(ev)
	ev.Size = n
	return keep
}

// serveHitHTTP answers a request inside an inspected tunnel from the store.
func (p *Proxy) serveHitHTTP(w http.ResponseWriter, r *http.Request, hit *storedHit, ev *Event) {
	defer hit.blob.Close()
	ev.Status, ev.Source, ev.Reason = http.StatusOK, hit.source, "served from the store ("+hit.source+")"
	h := w.Header()
	h.Set("Content-Type", hitContentType(hit))
	if ce := hit.contentCode; ce != "" && isToken(ce) {
		h.Set("Content-Encoding", ce)
	}
	h.Set("Content-Length", strconv.FormatInt(hit.blob.Size, 10))
	h.Set("X-Cleanroom-Source", hit.source)
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	sink := p.hitSink(ev)
	n, rerr, werr := copyStream(w, hit.blob, sink, nil)
	ev.BytesIn = n
	if rerr != nil || werr != nil || n != hit.blob.Size {
		ev.Reason = fmt.Sprintf("serving from the store failed after %d bytes: %v", n, errors.Join(rerr, werr))
		return
	}
	sink.finish(ev)
	ev.Size = n
}

func hitContentType(hit *storedHit) string {
	if ct := hit.contentType; ct != "" && !hasCTL(ct) {
		return ct
	}
	return "application/octet-stream"
}

// bodySink hashes a response body as it streams by (sha256 always, sha512
// for package tarballs, whose lockfiles declare sha512) and, for a 200
// answer to a GET, writes it to the store. Storing is best effort: a full
// disk costs the cache entry, never the step's download.
type bodySink struct {
	p      *Proxy
	sha256 hash.Hash
	sha512 hash.Hash
	w      *store.Writer
	entry  store.Entry
	alias  string
	index  bool
	done   bool
}

var storeWarnOnce sync.Once

// newBodySink prepares the sink for resp to req; ev.URL must be set.
func (p *Proxy) newBodySink(req *http.Request, resp *http.Response, ev *Event) *bodySink {
	s := &bodySink{p: p, sha256: sha256.New()}
	if IsNPMTarball(ev.URL) {
		s.sha512 = sha512.New()
	}
	if p.cfg.Store == nil || p.cfg.Cache == CacheOff || req.Method != http.MethodGet || resp.StatusCode != http.StatusOK || ev.URL == "" {
		return s
	}
	w, err := p.cfg.Store.NewWriter()
	if err != nil {
		storeWarnOnce.Do(func() { p.log.Warn("cache: cannot write to the store; bodies are not kept", "error", err) })
		return s
	}
	s.w = w
	s.alias = ev.alias
	s.entry = store.Entry{Method: http.MethodGet, URL: ev.URL, Header: store.KeyHeaderMap(req.Header),
		ContentType: resp.Header.Get("Content-Type"), ContentEncoding: resp.Header.Get("Content-Encoding")}
	// Bodies behind credentials are kept by digest (a replay may need
	// them) but not indexed by URL, so no other run is ever served them
	// from the cache just by asking for the URL.
	s.index = req.Header.Get("Authorization") == "" && req.Header.Get("Cookie") == "" &&
		!strings.Contains(strings.ToLower(resp.Header.Get("Cache-Control")), "no-store")
	return s
}

// hitSink hashes a body served from the store (sha512 for tarballs).
func (p *Proxy) hitSink(ev *Event) *bodySink {
	s := &bodySink{p: p, sha256: sha256.New()}
	if IsNPMTarball(ev.URL) {
		s.sha512 = sha512.New()
	}
	return s
}

func (s *bodySink) Write(b []byte) (int, error) {
	s.sha256.Write(b)
	if s.sha512 != nil {
		s.sha512.Write(b)
	}
	if s.w != nil {
		if _, err := s.w.Write(b); err != nil {
			s.p.log.Warn("cache: write failed; this body is not kept", "url", s.entry.URL, "error", err)
			s.w.Abort()
			s.w = nil
		}
	}
	return len(b), nil
}

// finish records the digests of a complete body in ev and commits it to
// the store.
func (s *bodySink) finish(ev *Event) {
	if s.done {
		return
	}
	s.done = true
	ev.SHA256 = hex.EncodeToString(s.sha256.Sum(nil))
	if s.sha512 != nil {
		ev.SHA512 = "sha512-" + base64.StdEncoding.EncodeToString(s.sha512.Sum(nil))
	}
	if s.w == nil {
		return
	}
	size := s.w.Size()
	if _, err := s.w.Commit(ev.SHA256); err != nil {
		s.p.log.Warn("cache: could not keep body", "url", ev.URL, "error", err)
		return
	}
	if !s.index {
		return
	}
	e := s.entry
	e.SHA256, e.Size = ev.SHA256, size
	if err := s.p.cfg.Store.PutEntry(e); err != nil {
		s.p.log.Warn("cache: could not index body", "url", ev.URL, "error", err)
	}
	if s.alias != "" && s.alias != e.URL {
		e.URL = s.alias
		s.p.cfg.Store.PutEntry(e)
	}
}

// abort discards a body that did not complete (no-op after finish).
func (s *bodySink) abort() {
	if s.done {
		return
	}
	s.done = true
	if s.w != nil {
		s.w.Abort()
	}
}
