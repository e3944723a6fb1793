package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRuntimeRunscEndToEnd: `runtime: runsc` runs the steps under gVisor
// (its own kernel answers uname), the provenance records runtime and
// version, `verify --policy requireRuntime` accepts it and refuses another,
// and --runtime overrides the pipeline.
func TestRuntimeRunscEndToEnd(t *testing.T) {
	e := newEnv(t)
	e.pipeline(`version: 1
image: IMAGE
runtime: runsc
steps:
  - name: build
    run: |
      mkdir -p out
      uname -r > out/kernel
      cat /proc/self/uid_map > out/uidmap
artifacts: [out/kernel, out/uidmap]
`)
	r := e.run(nil, "run")
	if r.code != 0 {
		t.Fatalf("%s", r)
	}
	host, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	kernel, _ := os.ReadFile(filepath.Join(e.dir, "out/kernel"))
	if strings.TrimSpace(string(kernel)) == strings.TrimSpace(string(host)) || len(kernel) == 0 {
		t.Fatalf("the step saw the host kernel %q under runsc", kernel)
	}
	sb := sandboxParams(t, e)
	if sb["runtime"] != "runsc" || sb["runtimeVersion"] == "" || sb["runtimeVersion"] == "unknown" {
		t.Fatalf("provenance sandbox %v", sb)
	}
	prov := filepath.Join(e.dir, ".cleanroom", "provenance.intoto.json")
	pol := filepath.Join(t.TempDir(), "policy.yaml")
	os.WriteFile(pol, []byte("requireRuntime: runsc\n"), 0o644)
	if v := e.run(nil, "verify", filepath.Join(e.dir, "out/kernel"), "--provenance", prov, "--policy", pol); v.code != 0 {
		t.Fatalf("verify: %s", v)
	}

	// --runtime wins over the pipeline: runc, in a user namespace.
	if r := e.run(nil, "run", "--runtime", "runc"); r.code != 0 {
		t.Fatalf("%s", r)
	}
	sb = sandboxParams(t, e)
	uidmap, _ := os.ReadFile(filepath.Join(e.dir, "out/uidmap"))
	if sb["runtime"] != "runc" || sb["userNamespace"] != true || strings.Fields(string(uidmap))[1] == "0" {
		t.Fatalf("provenance sandbox %v, uid_map %q", sb, uidmap)
	}
	v := e.run(nil, "verify", filepath.Join(e.dir, "out/kernel"), "--provenance", prov, "--policy", pol)
	if v.code == 0 || !strings.Contains(v.stdout+v.stderr, `runtime is "runc", policy requires "runsc"`) {
		t.Fatalf("verify accepted a runc build under requireRuntime: runsc: %s", v)
	}
	if r := e.run(nil, "run", "--runtime", "kata"); r.code != 2 || !strings.Contains(r.stderr, "kata") {
		t.Fatalf("unknown runtime: %s", r)
	}
	requireNoResidue(t)

	// A failed gVisor step: the step prepared behind it is discarded and
	// nothing is left (gVisor cannot remove a created, unstarted task, so
	// its task is made only when it starts).
	e.pipeline(`version: 1
image: IMAGE
runtime: runsc
steps:
  - {name: a, run: "sleep 1; exit 1"}
  - {name: b, run: "true"}
`)
	if r := e.run(nil, "run"); r.code != 1 {
		t.Fatalf("%s", r)
	}
	requireNoResidue(t)
}

func sandboxParams(t *testing.T, e *env) map[string]any {
	t.Helper()
	_, raw := e.provenance()
	var st struct {
		Predicate struct {
			BuildDefinition struct {
				InternalParameters struct {
					Sandbox map[string]any `json:"sandbox"`
				} `json:"internalParameters"`
			} `json:"buildDefinition"`
		} `json:"predicate"`
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatal(err)
	}
	return st.Predicate.BuildDefinition.InternalParameters.Sandbox
}
