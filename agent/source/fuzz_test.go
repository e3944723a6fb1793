package source

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzExtractTarball feeds arbitrary uploads to the extractor: whatever it
// accepts or refuses, it must not panic and must never create anything
// outside its directory.
func FuzzExtractTarball(f *testing.F) {
	seed := func(entries ...tar.Header) []byte {
		var buf bytes.Buffer
		gz := gzip.NewWriter(&buf)
		tw := tar.NewWriter(gz)
		for _, h := range entries {
			if h.Typeflag == tar.TypeReg {
				h.Size = 2
			}
			tw.WriteHeader(&h)
			if h.Typeflag == tar.TypeReg {
				tw.Write([]byte("x\n"))
			}
		}
		tw.Close()
		gz.Close()
		return buf.Bytes()
	}
	f.Add(seed(tar.Header{Name: "a/b.txt", Typeflag: tar.TypeReg, Mode: 0o644}))
	f.Add(seed(tar.Header{Name: "../escape", Typeflag: tar.TypeReg, Mode: 0o644}))
	f.Add(seed(tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "../.."}, tar.Header{Name: "l/x", Typeflag: tar.TypeReg}))
	f.Add(seed(tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "/etc/passwd"}))
	f.Add(seed(tar.Header{Name: "d", Typeflag: tar.TypeDir, Mode: 0o7777}, tar.Header{Name: "d/s", Typeflag: tar.TypeSymlink, Linkname: "."}))
	f.Add([]byte("not a tarball"))
	f.Fuzz(func(t *testing.T, data []byte) {
		parent := t.TempDir()
		dir := filepath.Join(parent, "ws")
		os.Mkdir(dir, 0o755)
		ExtractTarball(bytes.NewReader(data), dir, Limits{MaxBytes: 1 << 20, MaxFiles: 1000})
		ents, _ := os.ReadDir(parent)
		if len(ents) != 1 || ents[0].Name() != "ws" {
			t.Fatalf("extraction wrote outside its directory: %v", ents)
		}
		filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err != nil || d.Type()&os.ModeSymlink == 0 {
				return nil
			}
			target, _ := os.Readlink(p)
			resolved := filepath.Clean(filepath.Join(filepath.Dir(p), target))
			if filepath.IsAbs(target) || (resolved != dir && !strings.HasPrefix(resolved, dir+string(filepath.Separator))) {
				t.Fatalf("symlink %s → %s points outside", p, target)
			}
			return nil
		})
	})
}
