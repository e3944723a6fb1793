package integration

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cleanroom-ci/cleanroom/internal/testenv"
)

var (
	goImageOnce sync.Once
	goImagePath string
	goImageErr  error
)

// goToolchainImage builds the examples' Go image (busybox and the host's
// toolchain), as make demo-go does, once per Go version: it is kept in the
// temporary directory under a name derived from `go version`, so later
// test runs reuse it.
func goToolchainImage(t *testing.T) string {
	t.Helper()
	goImageOnce.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..")
		ver, err := exec.Command("go", "env", "GOVERSION", "GOROOT").Output()
		if err != nil {
			goImageErr = err
			return
		}
		lines := strings.Fields(string(ver))
		goImagePath = filepath.Join(os.TempDir(), "cleanroom-testimage-gotoolchain-"+lines[0]+".tar")
		if _, err := os.Stat(goImagePath); err == nil {
			return
		}
		tmp := goImagePath + ".tmp-" + strconv.Itoa(os.Getpid())
		defer os.Remove(tmp)
		cmd := exec.Command("go", "run", "./internal/cmd/mkbusybox", "-goroot", lines[1], "-o", tmp)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			goImageErr = fmt.Errorf("mkbusybox: %v\n%s", err, out)
			return
		}
		goImageErr = os.Rename(tmp, goImagePath)
	})
	if goImageErr != nil {
		t.Fatal(goImageErr)
	}
	return goImagePath
}

// moduleFiles fetches a module version into the host's module cache (the
// host's own go command, as any build of this repository does) and returns
// its proxy files by proxy path.
func moduleFiles(t *testing.T, mod, version string) map[string][]byte {
	t.Helper()
	cmd := exec.Command("go", "mod", "download", "-json", mod+"@"+version)
	cmd.Dir = t.TempDir()
	out, err := cmd.Output()
	if err != nil {
		testenv.Missing(t, "the module "+mod+"@"+version+" (go mod download: "+err.Error()+")")
	}
	var info struct{ Info, GoMod, Zip string }
	if err := json.Unmarshal(out, &info); err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{"/" + mod + "/@v/list": []byte(version + "\n")}
	for ext, p := range map[string]string{".info": info.Info, ".mod": info.GoMod, ".zip": info.Zip} {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		files["/"+mod+"/@v/"+version+ext] = b
	}
	return files
}

// The Go example (examples/go-module) is reproducible: rebuild --check 2
// passes with every variation, live through the recording proxy against a
// loopback module proxy, and then offline from the exported materials
// (upstream closed), compared with the reference's provenance, whose flags
// are reused.
func TestRebuildGoExampleLiveAndOffline(t *testing.T) {
	e := newEnv(t)
	// Each rebuild compiles the program and the standard library three
	// times (with empty caches, as every build's /tmp is fresh).
	e.Timeout = 20 * time.Minute
	image := goToolchainImage(t)
	files := moduleFiles(t, "github.com/google/uuid", "v1.6.0")
	var hits atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		b, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(b)
	}))
	defer up.Close()
	hostPort := strings.TrimPrefix(up.URL, "http://")

	_, file, _, _ := runtime.Caller(0)
	example := filepath.Join(filepath.Dir(file), "..", "examples", "go-module")
	for _, f := range []string{"cleanroom.yaml", "go.mod", "go.sum", "main.go"} {
		b, err := os.ReadFile(filepath.Join(example, f))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(e.dir, f), b, 0o644)
	}
	os.MkdirAll(filepath.Join(e.dir, "images"), 0o755)
	if err := os.Link(image, filepath.Join(e.dir, "images", "go.tar")); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(e.dir, ".gitignore"), []byte("images/\n.cleanroom/\nout/\n"), 0o644)
	gitCommit(t, e.dir, "2026-03-04T05:06:07Z")

	cacheA, cacheB := t.TempDir(), t.TempDir()
	r := e.run(nil, "rebuild", "--check", "2", "--cache", cacheA, "--goproxy-upstream", up.URL+"/", "--allow", hostPort)
	if r.code != 0 || !strings.Contains(r.stdout, "rebuild: reproduced") {
		t.Fatalf("live rebuild: %s", r)
	}
	out := filepath.Join(e.dir, ".cleanroom", "rebuild")
	rep := readRebuildReport(t, out)
	if !rep.Reproduced || len(rep.Builds) != 2 || len(rep.Builds[0].Varied) < 8 {
		t.Fatalf("report %+v", rep)
	}

	// The reference's provenance, its materials exported to a kit and
	// imported into an empty store; the upstream is gone.
	prov := filepath.Join(t.TempDir(), "provenance.intoto.json")
	data, err := os.ReadFile(filepath.Join(out, "build-0", "provenance.intoto.json"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(prov, data, 0o644)
	// The kit carries the image and the provenance too: the image archive
	// and the local image are removed, and import-materials brings both
	// back.
	kit := filepath.Join(t.TempDir(), "kit")
	if r := e.run(nil, "export-materials", "--images", "--workdir", e.dir, prov, kit, "--cache", cacheA); r.code != 0 || !strings.Contains(r.stdout, "exported image oci-archive:./images/go.tar") {
		t.Fatalf("export: %s", r)
	}
	os.Remove(filepath.Join(e.dir, "images", "go.tar"))
	for _, f := range []string{"images.json", "provenance.intoto.json"} {
		if _, err := os.Stat(filepath.Join(kit, f)); err != nil {
			t.Fatal(err)
		}
	}
	var imgs []struct{ Digest string }
	b, _ := os.ReadFile(filepath.Join(kit, "images.json"))
	if err := json.Unmarshal(b, &imgs); err != nil || len(imgs) != 1 {
		t.Fatalf("images.json: %s %v", b, err)
	}
	if r := e.run(nil, "image", "rm", imgs[0].Digest); r.code != 0 {
		t.Fatalf("image rm: %s", r)
	}
	if r := e.run(nil, "import-materials", kit, "--cache", cacheB, "--workdir", e.dir); r.code != 0 || !strings.Contains(r.stdout, "imported 1 images") {
		t.Fatalf("import: %s", r)
	}
	prov = filepath.Join(kit, "provenance.intoto.json")
	up.Close()
	before := hits.Load()
	r = e.run(nil, "rebuild", "--check", "2", "--against", prov, "--offline", "--cache", cacheB)
	if r.code != 0 || !strings.Contains(r.stdout, "rebuild: reproduced") {
		t.Fatalf("offline rebuild: %s", r)
	}
	if !strings.Contains(r.stderr, "reusing the flags the provenance records") {
		t.Errorf("recorded flags not reused:\n%s", r.stderr)
	}
	if hits.Load() != before {
		t.Fatal("the offline rebuild contacted the upstream")
	}
	rep = readRebuildReport(t, out)
	if !rep.Reproduced || len(rep.Builds) != 2 || rep.Reference != prov {
		t.Fatalf("offline report %+v", rep)
	}
	requireNoResidue(t)
}
