package pipeline

import (
	"os"
	"path/filepath"
	"testing"
)

func TestCheckArchives(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "have.tar"), []byte("x"), 0o644)
	os.Mkdir(filepath.Join(dir, "rootfs"), 0o755)
	path := filepath.Join(dir, "cleanroom.yaml")
	os.WriteFile(path, []byte(`version: 1
image: oci-archive:./nope.tar
steps:
  - name: a
    run: "true"
  - name: b
    run: "true"
  - name: c
    image: docker-archive:have.tar
    run: "true"
  - name: d
    image: oci-archive:rootfs
    run: "true"
  - name: e
    image: busybox:1.36
    run: "true"
`), 0o644)
	p, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	err = CheckArchives(p, nil)
	want := path + ":2:8: image: archive ./nope.tar does not exist (" + filepath.Join(dir, "nope.tar") + ")\n" +
		path + ":12:12: steps[3].image: archive rootfs is a directory, not an image archive (pack it with `cleanroom image pack`) (" + filepath.Join(dir, "rootfs") + ")"
	if err == nil || err.Error() != want {
		t.Fatalf("got\n%v\nwant\n%s", err, want)
	}
	if err := CheckArchives(p, []string{"c", "e"}); err != nil {
		t.Errorf("steps with an existing archive and a registry image: %v", err)
	}
}
