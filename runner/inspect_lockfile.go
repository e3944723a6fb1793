package runner

import (
	"archive/zip"
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/cleanroom-ci/cleanroom/runner/manifest"
	"github.com/cleanroom-ci/cleanroom/sandbox/egress"
	"github.com/cleanroom-ci/cleanroom/sandbox/egress/store"
)

// Declared vs fetched: the lockfiles of the source say which packages a
// build may use and what they hash to; the proxy saw what the build really
// downloaded. The check compares the two:
//
//   - Go: every module zip fetched through the module proxy endpoint must
//     have a "module version h1:…" line in a go.sum of the workspace, and
//     its h1 (the dirhash of the zip's files, computed here from the body
//     kept in the store) must equal it; likewise a go.mod fetched alone
//     against the "module version/go.mod h1:…" line.
//   - npm: every registry tarball (…/-/name-version.tgz) must be the
//     "resolved" tarball of an entry of a package-lock.json, and the
//     sha512 of the body (computed while streaming) must equal that
//     entry's "integrity".
//
// Lockfiles are read before the first step runs, so a step cannot rewrite
// what was declared.

// maxLockfileBytes bounds one lockfile read.
const maxLockfileBytes = 64 << 20

// declared is what the workspace's lockfiles declare.
type declared struct {
	files []string
	// goSums maps "module version" (version with "/go.mod" for go.mod
	// lines) to the h1 hashes declared for it.
	goSums map[string][]string
	// npm maps a tarball key (see npmKey) to its entry.
	npm map[string]npmEntry
}

type npmEntry struct {
	name, version, integrity string
}

// readLockfiles finds go.sum and package-lock.json files in the workspace
// (not under .git, node_modules, vendor or the output directory).
func readLockfiles(workspace, outDir string) declared {
	d := declared{goSums: map[string][]string{}, npm: map[string]npmEntry{}}
	filepath.WalkDir(workspace, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if e.IsDir() {
			switch {
			case p == outDir, e.Name() == ".git", e.Name() == "node_modules", e.Name() == "vendor" && p != workspace:
				return filepath.SkipDir
			}
			return nil
		}
		if e.Name() != "go.sum" && e.Name() != "package-lock.json" || !e.Type().IsRegular() {
			return nil
		}
		data, err := readLimited(p, maxLockfileBytes)
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(workspace, p)
		d.files = append(d.files, filepath.ToSlash(rel))
		if e.Name() == "go.sum" {
			parseGoSum(data, d.goSums)
		} else {
			parsePackageLock(data, d.npm)
		}
		return nil
	})
	sort.Strings(d.files)
	return d
}

func readLimited(p string, max int64) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err == nil && int64(len(data)) > max {
		err = errors.New("too large")
	}
	return data, err
}

func parseGoSum(data []byte, into map[string][]string) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 || !strings.HasPrefix(f[2], "h1:") {
			continue
		}
		k := f[0] + " " + f[1]
		into[k] = append(into[k], f[2])
	}
}

// parsePackageLock reads lockfileVersion 1 ("dependencies", nested) and
// 2/3 ("packages") entries that carry a resolved tarball.
func parsePackageLock(data []byte, into map[string]npmEntry) {
	type dep struct {
		Version      string          `json:"version"`
		Resolved     string          `json:"resolved"`
		Integrity    string          `json:"integrity"`
		Dependencies json.RawMessage `json:"dependencies"`
	}
	var lock struct {
		Packages     map[string]dep  `json:"packages"`
		Dependencies json.RawMessage `json:"dependencies"`
	}
	if json.Unmarshal(data, &lock) != nil {
		return
	}
	add := func(name string, d dep) {
		if k := npmKey(d.Resolved); k != "" && d.Integrity != "" {
			into[k] = npmEntry{name: name, version: d.Version, integrity: d.Integrity}
		}
	}
	for p, d := range lock.Packages {
		name := p
		if i := strings.LastIndex(p, "node_modules/"); i >= 0 {
			name = p[i+len("node_modules/"):]
		}
		add(name, d)
	}
	var walk func(raw json.RawMessage, depth int)
	walk = func(raw json.RawMessage, depth int) {
		var deps map[string]dep
		if depth > 64 || len(raw) == 0 || json.Unmarshal(raw, &deps) != nil {
			return
		}
		for name, d := range deps {
			add(name, d)
			walk(d.Dependencies, depth+1)
		}
	}
	walk(lock.Dependencies, 0)
}

// npmKey identifies a registry tarball independently of the registry's
// address (a mirror serves the same path): "<name>/-/<file>.tgz", with a
// scope kept ("@scope/name/-/name-1.0.0.tgz").
func npmKey(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || !egress.IsNPMTarball(raw) {
		return ""
	}
	p, err := url.PathUnescape(u.EscapedPath())
	if err != nil {
		p = u.Path
	}
	before, file, ok := strings.Cut(p, "/-/")
	if !ok {
		return ""
	}
	segs := strings.Split(strings.Trim(before, "/"), "/")
	name := segs[len(segs)-1]
	if len(segs) >= 2 && strings.HasPrefix(segs[len(segs)-2], "@") {
		name = segs[len(segs)-2] + "/" + name
	}
	return name + "/-/" + file
}

// checkLockfiles compares the fetches in events with what d declares.
// st, when not nil, holds the bodies needed to compute Go's h1 hashes.
func checkLockfiles(d declared, events []egress.Event, st *store.Store) *manifest.LockfileCheck {
	lc := &manifest.LockfileCheck{
		Lockfiles:  append([]string{}, d.files...),
		Undeclared: []manifest.LockfileFinding{},
		Mismatches: []manifest.LockfileFinding{},
	}
	seen := map[string]bool{}
	for _, e := range events {
		if e.Decision == egress.DecisionDeny || e.Status != 200 || e.SHA256 == "" || e.Method != "GET" {
			continue
		}
		var f manifest.LockfileFinding
		var declaredHashes []string
		var fetched func() (string, error)
		switch kind := goFileKind(e.URL); {
		case e.Module != "" && e.Version != "" && (kind == ".zip" || kind == ".mod"):
			f = manifest.LockfileFinding{Step: e.Step, Ecosystem: "go", Package: e.Module, Version: e.Version, URL: e.URL}
			key := e.Module + " " + e.Version
			if kind == ".mod" {
				f.Ecosystem, key = "go.mod", key+"/go.mod"
			}
			declaredHashes = d.goSums[key]
			sha := e.SHA256
			fetched = func() (string, error) { return goHash(st, sha, kind) }
		case egress.IsNPMTarball(e.URL):
			k := npmKey(e.URL)
			ent, ok := d.npm[k]
			name, version := ent.name, ent.version
			if !ok {
				name, version = npmNameVersion(k)
			}
			f = manifest.LockfileFinding{Step: e.Step, Ecosystem: "npm", Package: name, Version: version, URL: e.URL}
			if ok {
				declaredHashes = []string{ent.integrity}
			}
			sha512 := e.SHA512
			fetched = func() (string, error) {
				if sha512 == "" {
					return "", errors.New("no sha512 was computed for the body")
				}
				return sha512, nil
			}
		default:
			continue
		}
		id := f.Ecosystem + " " + f.Package + "@" + f.Version + " " + e.SHA256
		if seen[id] {
			continue
		}
		seen[id] = true
		if len(declaredHashes) == 0 {
			f.Reason = "not declared in any lockfile"
			if h, err := fetched(); err == nil {
				f.Fetched = h
			}
			lc.Undeclared = append(lc.Undeclared, f)
			continue
		}
		f.Declared = strings.Join(declaredHashes, " ")
		h, err := fetched()
		if err != nil {
			f.Reason = "cannot compute the fetched hash: " + err.Error()
			lc.Unverified = append(lc.Unverified, f)
			continue
		}
		f.Fetched = h
		switch matched, comparable := hashDeclared(h, declaredHashes); {
		case matched:
			lc.Checked++
		case !comparable:
			f.Reason = "the lockfile declares no hash of a kind that was computed (" + f.Declared + ")"
			lc.Unverified = append(lc.Unverified, f)
		default:
			f.Reason = "fetched content differs from the declared hash"
			lc.Mismatches = append(lc.Mismatches, f)
		}
	}
	return lc
}

// hashDeclared reports whether h is among the declared hashes, and whether
// any declared hash is of h's kind at all. npm integrity strings may list
// several hashes separated by spaces.
func hashDeclared(h string, declaredHashes []string) (matched, comparable bool) {
	prefix, _, _ := strings.Cut(h, "-")
	if strings.HasPrefix(h, "h1:") {
		prefix = "h1:"
	}
	for _, dh := range declaredHashes {
		for _, one := range strings.Fields(dh) {
			if strings.HasPrefix(one, prefix) {
				comparable = true
				if one == h {
					return true, true
				}
			}
		}
	}
	return false, comparable
}

func npmNameVersion(key string) (string, string) {
	name, file, _ := strings.Cut(key, "/-/")
	base := name[strings.LastIndex(name, "/")+1:]
	return name, strings.TrimSuffix(strings.TrimPrefix(file, base+"-"), ".tgz")
}

// goFileKind returns ".zip" or ".mod" for a module proxy version file.
func goFileKind(raw string) string {
	p := raw
	if u, err := url.Parse(raw); err == nil {
		p = u.Path
	}
	if !strings.Contains(p, "/@v/") {
		return ""
	}
	return path.Ext(p)
}

// goHash computes the go.sum hash of a module file kept in the store.
func goHash(st *store.Store, sha string, kind string) (string, error) {
	if st == nil {
		return "", errors.New("the body was not kept (no store: egress.cache off)")
	}
	b, err := st.Open(sha)
	if err != nil {
		return "", fmt.Errorf("the body is not in the store: %w", err)
	}
	defer b.Close()
	if kind == ".mod" {
		data, err := io.ReadAll(b)
		if err != nil {
			return "", err
		}
		return hash1([]string{"go.mod"}, func(string) (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(data)), nil
		})
	}
	return hashZip(b.File, b.Size)
}

// hash1 is the go.sum "h1:" hash (golang.org/x/mod/sumdb/dirhash.Hash1):
// the sha256 of the lines "<sha256 hex of the file>  <name>\n", one per
// file in name order, base64-encoded.
func hash1(files []string, open func(string) (io.ReadCloser, error)) (string, error) {
	h := sha256.New()
	files = append([]string(nil), files...)
	sort.Strings(files)
	for _, file := range files {
		if strings.Contains(file, "\n") {
			return "", errors.New("file names with newlines are not supported")
		}
		r, err := open(file)
		if err != nil {
			return "", err
		}
		hf := sha256.New()
		_, err = io.Copy(hf, r)
		r.Close()
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%x  %s\n", hf.Sum(nil), file)
	}
	return "h1:" + base64.StdEncoding.EncodeToString(h.Sum(nil)), nil
}

// hashZip is dirhash.HashZip with Hash1 over a module zip: every entry,
// named as in the zip ("module@version/path").
func hashZip(r io.ReaderAt, size int64) (string, error) {
	z, err := zip.NewReader(r, size)
	if err != nil {
		return "", fmt.Errorf("not a zip: %w", err)
	}
	var names []string
	byName := map[string]*zip.File{}
	for _, f := range z.File {
		names = append(names, f.Name)
		byName[f.Name] = f
	}
	return hash1(names, func(name string) (io.ReadCloser, error) {
		f := byName[name]
		if f == nil {
			return nil, fmt.Errorf("file %q not found in zip", name)
		}
		return f.Open()
	})
}
