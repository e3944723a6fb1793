package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cleanroom-ci/cleanroom/runner/manifest"
)

// cli runs the command in-process with its output captured.
func cli(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return code, out.String(), errb.String()
}

// provenanceFixture writes an artifact and an unsigned statement attesting it
// with one digested fetch and one tunnel.
func provenanceFixture(t *testing.T) (art, prov string) {
	t.Helper()
	dir := t.TempDir()
	art = filepath.Join(dir, "app")
	if err := os.WriteFile(art, []byte("app-binary"), 0o644); err != nil {
		t.Fatal(err)
	}
	subjects, err := manifest.MatchArtifacts(dir, []string{"app"})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	st, err := manifest.Build(manifest.Input{
		BuilderID:     "https://ci.example.com/cleanroom@v1",
		InvocationID:  "7c9e6679-7425-40de-944b-e07fc1f90ae7",
		StartedOn:     start,
		FinishedOn:    start.Add(time.Second),
		RunnerVersion: "test",
		Pipeline:      manifest.File{Path: "cleanroom.yaml", SHA256: strings.Repeat("1", 64)},
		Steps:         []string{"build"},
		Source:        manifest.Source{TreeSHA256: strings.Repeat("4", 64)},
		Images:        []manifest.Image{{Step: "build", Ref: "oci-archive:./images/builder.tar", Digest: strings.Repeat("2", 64)}},
		Dependencies: []manifest.Dependency{
			{Step: "build", URL: "http://deps.example.org/lib.tgz", SHA256: strings.Repeat("3", 64), Size: 3, Method: "GET"},
			{Step: "build", URL: "sumdb.example.org:443"},
		},
		Sandbox:  map[string]any{"backend": "test"},
		Subjects: subjects,
	})
	if err != nil {
		t.Fatal(err)
	}
	prov = filepath.Join(dir, "provenance.intoto.json")
	if err := manifest.WriteFile(prov, st); err != nil {
		t.Fatal(err)
	}
	return art, prov
}

func TestVerifyExitCodesAndOutput(t *testing.T) {
	art, prov := provenanceFixture(t)
	dir := filepath.Dir(prov)
	policy := filepath.Join(dir, "policy.yaml")
	os.WriteFile(policy, []byte("builderId: https://ci.example.com/cleanroom@v1\nimagesPinned: true\n"), 0o644)
	strict := filepath.Join(dir, "strict.yaml")
	os.WriteFile(strict, []byte("allDependenciesDigested: true\n"), 0o644)
	other := filepath.Join(dir, "other")
	os.WriteFile(other, []byte("not the artifact"), 0o644)
	notJSON := filepath.Join(dir, "cleanroom.yaml")
	os.WriteFile(notJSON, []byte("version: 1\n"), 0o644)

	t.Run("verified with policy", func(t *testing.T) {
		code, out, errs := cli(t, "verify", art, "--provenance", prov, "--policy", policy)
		if code != 0 {
			t.Fatalf("exit %d\n%s%s", code, out, errs)
		}
		for _, want := range []string{
			"dependencies:  2 fetched, 1 without digest\n" +
				"  http://deps.example.org/lib.tgz  sha256:" + strings.Repeat("3", 64) + "\n" +
				"  sumdb.example.org:443  (no digest: content not seen)\n",
			"policy passed: 2\n" +
				"  OK   builderId: builder is \"https://ci.example.com/cleanroom@v1\"\n" +
				"  OK   imagesPinned: all 1 images are pinned by digest or are archives\n" +
				"result:        verified\n",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("stdout lacks\n%s\ngot:\n%s", want, out)
			}
		}
	})
	t.Run("missing provenance is exit 2", func(t *testing.T) {
		code, out, errs := cli(t, "verify", art, "--provenance", filepath.Join(dir, "nope.json"))
		if code != 2 || out != "" || errs != "cleanroom: --provenance: open "+filepath.Join(dir, "nope.json")+": no such file or directory\n" {
			t.Fatalf("exit %d\nstdout %q\nstderr %q", code, out, errs)
		}
	})
	t.Run("missing bundle is exit 2", func(t *testing.T) {
		code, _, errs := cli(t, "verify", art, "--provenance-bundle", filepath.Join(dir, "nope.json"), "--key", filepath.Join(dir, "nope.pub"))
		if code != 2 || !strings.HasPrefix(errs, "cleanroom: --key: ") {
			t.Fatalf("exit %d\nstderr %q", code, errs)
		}
	})
	t.Run("not a statement is exit 1", func(t *testing.T) {
		code, _, errs := cli(t, "verify", art, "--provenance", notJSON)
		if code != 1 || !strings.HasPrefix(errs, "cleanroom: verification failed: --provenance: ") {
			t.Fatalf("exit %d\nstderr %q", code, errs)
		}
	})
	t.Run("failure is printed once", func(t *testing.T) {
		code, out, errs := cli(t, "verify", other, "--provenance", prov, "--policy", strict)
		if code != 1 {
			t.Fatalf("exit %d\n%s%s", code, out, errs)
		}
		if n := strings.Count(out+errs, "is not a subject of the statement"); n != 1 {
			t.Errorf("artifact failure printed %d times:\n%s%s", n, out, errs)
		}
		if n := strings.Count(out+errs, "dependencies have no digest"); n != 1 {
			t.Errorf("policy failure printed %d times:\n%s%s", n, out, errs)
		}
		if errs != "cleanroom: verification failed: 2 check(s) failed\n" {
			t.Errorf("stderr %q", errs)
		}
	})
	for _, tc := range []struct {
		name     string
		args     []string
		status   string
		code     int
		error    string
		reported bool
	}{
		{"json verified", []string{art, "--provenance", prov}, "verified", 0, "", true},
		{"json failed", []string{other, "--provenance", prov}, "failed", 1, "verification failed: 1 check(s) failed", true},
		{"json error", []string{art, "--provenance", filepath.Join(dir, "nope.json")}, "error", 2, "--provenance: open " + filepath.Join(dir, "nope.json") + ": no such file or directory", false},
		{"json usage", []string{art}, "error", 2, "--provenance-bundle FILE (signed) or --provenance FILE (unsigned) is required", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, _ := cli(t, append([]string{"verify", "--output", "json"}, tc.args...)...)
			var got struct {
				Status   string           `json:"status"`
				ExitCode int              `json:"exitCode"`
				Verified bool             `json:"verified"`
				Error    string           `json:"error"`
				Report   *manifest.Report `json:"report"`
			}
			if err := json.Unmarshal([]byte(out), &got); err != nil {
				t.Fatalf("stdout is not one JSON object: %v\n%s", err, out)
			}
			if code != tc.code || got.ExitCode != tc.code || got.Status != tc.status || got.Error != tc.error || got.Verified != (tc.code == 0) || (got.Report != nil) != tc.reported {
				t.Fatalf("exit %d, got %+v; want status %s exit %d error %q", code, got, tc.status, tc.code, tc.error)
			}
			if tc.reported && len(got.Report.Fetched) != 2 {
				t.Errorf("report.fetched = %+v", got.Report.Fetched)
			}
		})
	}
}
