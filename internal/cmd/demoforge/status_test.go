package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cleanroom-ci/cleanroom/agent/forge"
)

// The agent's own reporter posts to the demo forge, which records the
// statuses in order and refuses a wrong token.
func TestStatusAPIRecordsTheAgentsStatuses(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	os.WriteFile(tokenFile, []byte("s3cret\n"), 0o600)
	mux := http.NewServeMux()
	newStatusAPI(tokenFile).register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	const sha = "0123456789abcdef0123456789abcdef01234567"
	rep := &forge.Reporter{Kind: forge.GitHub, API: srv.URL, Repository: "demo/hello", TokenFile: tokenFile}
	for _, state := range []string{forge.Running, forge.Success} {
		if err := rep.Post(context.Background(), sha, state, "http://127.0.0.1:1/jobs/j1", state); err != nil {
			t.Fatal(err)
		}
	}
	got, err := listStatuses(srv.URL, "demo/hello", sha, "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].State != "success" || got[1].State != "pending" || got[0].Context != "cleanroom" {
		t.Fatalf("statuses newest first = %+v, want success then pending, context cleanroom", got)
	}
	// The checker takes them oldest first.
	got[0], got[1] = got[1], got[0]
	if err := checkStatuses(got, []string{"pending", "success"}, "http://127.0.0.1:1/jobs/j1"); err != nil {
		t.Fatal(err)
	}
	if err := checkStatuses(got, []string{"pending", "success"}, "http://127.0.0.1:1/jobs/other"); err == nil {
		t.Fatal("a status with another link passed the check")
	}
	if err := checkStatuses(got[:1], []string{"pending", "success"}, ""); err == nil {
		t.Fatal("a missing success passed the check")
	}

	wrong := filepath.Join(dir, "wrong")
	os.WriteFile(wrong, []byte("guess"), 0o600)
	bad := &forge.Reporter{Kind: forge.GitHub, API: srv.URL, Repository: "demo/hello", TokenFile: wrong}
	if err := bad.Post(context.Background(), sha, forge.Failure, "", "forged"); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("a post with a wrong token: err = %v, want 401", err)
	}
	if got, _ := listStatuses(srv.URL, "demo/hello", sha, "s3cret"); len(got) != 2 {
		t.Fatalf("after a refused post the forge holds %d statuses, want 2", len(got))
	}
	if _, err := listStatuses(srv.URL, "demo/hello", sha, "guess"); err == nil {
		t.Fatal("listing with a wrong token succeeded")
	}
}
