package source

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// entry is one tar entry to build; typ defaults to a regular file.
type entry struct {
	name string
	typ  byte
	mode int64
	body string
	link string
	size int64 // overrides len(body) in the header when set
}

func makeTar(t *testing.T, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Linkname: e.link, Format: tar.FormatPAX}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if h.Typeflag == tar.TypeXGlobalHeader {
			h = &tar.Header{Name: e.name, Typeflag: e.typ, PAXRecords: map[string]string{"comment": "made by a test"}}
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if e.body != "" {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gz(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func happyTar(t *testing.T) []byte {
	return makeTar(t,
		entry{name: "./", typ: tar.TypeDir, mode: 0o700},
		entry{name: "cleanroom.yaml", body: "steps: []\n"},
		entry{name: "bin/", typ: tar.TypeDir, mode: 0o1777},
		entry{name: "bin/build.sh", mode: 0o4750, body: "#!/bin/sh\necho hi\n"},
		entry{name: "src/deep/nested/file.go", mode: 0o600, body: "package nested\n"}, // parents implied
		entry{name: "src/link.go", typ: tar.TypeSymlink, link: "deep/nested/file.go"},
		entry{name: "src/deep/up", typ: tar.TypeSymlink, link: "../../cleanroom.yaml"},
		entry{name: "hard.yaml", typ: tar.TypeLink, link: "cleanroom.yaml"},
		entry{name: "a/../b.txt", body: "b\n"}, // ".." that stays inside
		entry{name: "x", typ: tar.TypeXGlobalHeader},
	)
}

func TestExtractTarball(t *testing.T) {
	for _, compressed := range []bool{false, true} {
		raw := happyTar(t)
		if compressed {
			raw = gz(t, raw)
		}
		dir := filepath.Join(t.TempDir(), "src")
		res, err := ExtractTarball(bytes.NewReader(raw), dir, Limits{})
		if err != nil {
			t.Fatalf("gzip=%v: %v", compressed, err)
		}
		sum := sha256.Sum256(raw)
		if res.SHA256 != hex.EncodeToString(sum[:]) || res.Size != int64(len(raw)) {
			t.Fatalf("gzip=%v: got %+v, want sha256 %x size %d", compressed, res, sum, len(raw))
		}
		if res.Files != 8 {
			t.Errorf("gzip=%v: Files = %d, want 8", compressed, res.Files)
		}
		for p, want := range map[string]string{
			"cleanroom.yaml":          "steps: []\n",
			"bin/build.sh":            "#!/bin/sh\necho hi\n",
			"src/deep/nested/file.go": "package nested\n",
			"src/link.go":             "package nested\n",
			"src/deep/up":             "steps: []\n",
			"hard.yaml":               "steps: []\n",
			"b.txt":                   "b\n",
		} {
			b, err := os.ReadFile(filepath.Join(dir, p))
			if err != nil || string(b) != want {
				t.Errorf("%s: %q, %v", p, b, err)
			}
		}
		for p, want := range map[string]os.FileMode{
			"cleanroom.yaml":          0o644,
			"bin/build.sh":            0o755, // setuid stripped, exec kept
			"src/deep/nested/file.go": 0o644,
			"bin":                     0o755 | os.ModeDir, // sticky stripped
			"src/deep":                0o755 | os.ModeDir,
		} {
			fi, err := os.Lstat(filepath.Join(dir, p))
			if err != nil || fi.Mode() != want {
				t.Errorf("%s: mode %v, %v; want %v", p, fi.Mode(), err, want)
			}
		}
		if _, err := os.Stat(filepath.Join(dir, "a")); err == nil {
			t.Error("a/../b.txt created a")
		}
	}
}

func TestExtractTarballReplacesEarlierEntries(t *testing.T) {
	dir := t.TempDir()
	outside := filepath.Join(t.TempDir(), "victim")
	write(t, outside, "untouched")
	// A later file with the name of an earlier symlink replaces the
	// symlink; it never writes through it.
	raw := makeTar(t,
		entry{name: "target", body: "original\n"},
		entry{name: "f", typ: tar.TypeSymlink, link: "target"},
		entry{name: "f", body: "replaced\n"},
	)
	if _, err := ExtractTarball(bytes.NewReader(raw), dir, Limits{}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "target")); string(b) != "original\n" {
		t.Fatalf("target = %q: written through the symlink", b)
	}
	if fi, _ := os.Lstat(filepath.Join(dir, "f")); !fi.Mode().IsRegular() {
		t.Fatalf("f is %v", fi.Mode())
	}
}

func TestExtractTarballRefusals(t *testing.T) {
	for name, c := range map[string]struct {
		entries []entry
		want    string
	}{
		"absolute":          {[]entry{{name: "/etc/passwd", body: "x"}}, `"/etc/passwd" has an absolute name`},
		"dotdot":            {[]entry{{name: "../evil", body: "x"}}, `"../evil" escapes`},
		"dotdot deep":       {[]entry{{name: "a/../../evil", body: "x"}}, `"a/../../evil" escapes`},
		"below symlink":     {[]entry{{name: "a", typ: tar.TypeSymlink, link: "b"}, {name: "b/", typ: tar.TypeDir}, {name: "a/x", body: "x"}}, `"a/x" is below "a", which is a symlink`},
		"below symlink dir": {[]entry{{name: "d", typ: tar.TypeSymlink, link: "."}, {name: "d/e/f", body: "x"}}, `"d/e/f" is below "d"`},
		"symlink absolute":  {[]entry{{name: "l", typ: tar.TypeSymlink, link: "/etc/passwd"}}, `"l": symlink to the absolute path "/etc/passwd"`},
		"symlink outside":   {[]entry{{name: "a/l", typ: tar.TypeSymlink, link: "../../etc"}}, `"a/l": symlink to "../../etc" points outside`},
		"symlink sneaky":    {[]entry{{name: "s", typ: tar.TypeSymlink, link: "."}, {name: "l", typ: tar.TypeSymlink, link: "s/.."}}, `".." after a directory name`},
		"hardlink outside":  {[]entry{{name: "h", typ: tar.TypeLink, link: "../etc/passwd"}}, `"h" is a hard link to "../etc/passwd", which is not an earlier regular file`},
		"hardlink absolute": {[]entry{{name: "h", typ: tar.TypeLink, link: "/etc/passwd"}}, `not an earlier regular file`},
		"hardlink later":    {[]entry{{name: "h", typ: tar.TypeLink, link: "f"}, {name: "f", body: "x"}}, `"h" is a hard link to "f"`},
		"hardlink symlink":  {[]entry{{name: "s", typ: tar.TypeSymlink, link: "x"}, {name: "h", typ: tar.TypeLink, link: "s"}}, `"h" is a hard link to "s"`},
		"hardlink dir":      {[]entry{{name: "d/", typ: tar.TypeDir}, {name: "h", typ: tar.TypeLink, link: "d"}}, `"h" is a hard link to "d"`},
		"char device":       {[]entry{{name: "null", typ: tar.TypeChar}}, `"null" is a device`},
		"block device":      {[]entry{{name: "sda", typ: tar.TypeBlock}}, `"sda" is a device`},
		"fifo":              {[]entry{{name: "p", typ: tar.TypeFifo}}, `"p" is a fifo`},
		"dir over file":     {[]entry{{name: "f", body: "x"}, {name: "f/", typ: tar.TypeDir}}, `replaces an earlier non-directory`},
		"file over dir":     {[]entry{{name: "d/", typ: tar.TypeDir}, {name: "d", body: "x"}}, `would replace an earlier directory`},
		"file below file":   {[]entry{{name: "f", body: "x"}, {name: "f/g", body: "x"}}, `"f/g": creating its directory`},
	} {
		dir := t.TempDir()
		_, err := ExtractTarball(bytes.NewReader(makeTar(t, c.entries...)), dir, Limits{})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v\nwant it to say %s", name, err, c.want)
		}
	}
}

func TestExtractTarballUnknownTypeRefused(t *testing.T) {
	// archive/tar has no socket type (tar cannot archive one); any type
	// beyond files, directories and links must be refused the same way.
	for _, typ := range []byte{'Z', tar.TypeCont} {
		raw := makeTar(t, entry{name: "sock", typ: typ})
		_, err := ExtractTarball(bytes.NewReader(raw), t.TempDir(), Limits{})
		if err == nil || !strings.Contains(err.Error(), `"sock"`) {
			t.Errorf("type %q: err = %v", typ, err)
		}
	}
}

func TestExtractTarballLimits(t *testing.T) {
	raw := makeTar(t, entry{name: "a", body: "12345"}, entry{name: "b", body: "67890"})
	if _, err := ExtractTarball(bytes.NewReader(raw), t.TempDir(), Limits{MaxBytes: 10}); err != nil {
		t.Fatalf("at the byte limit: %v", err)
	}
	_, err := ExtractTarball(bytes.NewReader(raw), t.TempDir(), Limits{MaxBytes: 9})
	if err == nil || !strings.Contains(err.Error(), `"b": the archive holds more than 9 bytes`) {
		t.Fatalf("bytes: %v", err)
	}
	if _, err := ExtractTarball(bytes.NewReader(raw), t.TempDir(), Limits{MaxFiles: 2}); err != nil {
		t.Fatalf("at the file limit: %v", err)
	}
	_, err = ExtractTarball(bytes.NewReader(raw), t.TempDir(), Limits{MaxFiles: 1})
	if err == nil || !strings.Contains(err.Error(), `"b": more than 1 entries`) {
		t.Fatalf("files: %v", err)
	}

	// A gzip bomb stops at the limit, not at the end of the bomb.
	big := makeTar(t, entry{name: "zeros", body: strings.Repeat("\x00", 4<<20)})
	_, err = ExtractTarball(bytes.NewReader(gz(t, big)), t.TempDir(), Limits{MaxBytes: 1 << 20})
	if err == nil || !strings.Contains(err.Error(), "more than 1048576 bytes") {
		t.Fatalf("bomb: %v", err)
	}
}

func TestExtractTarballBadInput(t *testing.T) {
	for name, c := range map[string]struct {
		raw  []byte
		want string
	}{
		"empty":     {nil, "the upload is empty"},
		"not tar":   {[]byte(strings.Repeat("hello world ", 100)), "not a tar archive"},
		"zstd":      {[]byte{0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0}, "zstd"},
		"zip":       {[]byte("PK\x03\x04rest"), "zip archive"},
		"bad gzip":  {[]byte{0x1f, 0x8b, 0, 0}, "not valid gzip"},
		"truncated": {makeTar(t, entry{name: "a", body: strings.Repeat("x", 2000)})[:1024], "\"a\""},
	} {
		_, err := ExtractTarball(bytes.NewReader(c.raw), t.TempDir(), Limits{})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want it to say %q", name, err, c.want)
		}
	}

	// A corrupted gzip trailer (checksum) is caught even though the tar
	// archive itself was complete.
	raw := gz(t, makeTar(t, entry{name: "a", body: "x"}))
	raw[len(raw)-6] ^= 0xff
	if _, err := ExtractTarball(bytes.NewReader(raw), t.TempDir(), Limits{}); err == nil || !strings.Contains(err.Error(), "gzip") {
		t.Errorf("bad checksum: %v", err)
	}
}
