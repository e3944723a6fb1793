package manifest

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"time"
)

// hexOf returns a deterministic fake digest for test inputs.
func hexOf(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// sampleInput is a run exercising every field; the golden file is its
// statement.
func sampleInput() Input {
	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	return Input{
		BuilderID:     "https://ci.example.com/cleanroom@v1",
		InvocationID:  "7c9e6679-7425-40de-944b-e07fc1f90ae7",
		StartedOn:     start,
		FinishedOn:    start.Add(93*time.Second + 250*time.Millisecond),
		RunnerVersion: "0.4.0",
		Pipeline:      File{Path: "cleanroom.yaml", SHA256: hexOf("pipeline")},
		Steps:         []string{"deps", "build", "test"},
		Flags: map[string][]string{
			"step":        {"deps", "build", "test"},
			"allow":       {"goproxy.example.org:443"},
			"egress-mode": {"enforce"},
		},
		Source: Source{
			Remote:     "https://ci-token:s3cr3t@github.com/example/app.git",
			Commit:     strings.Repeat("ab", 20),
			Ref:        "refs/heads/main",
			TreeSHA256: hexOf("tree"),
		},
		Images: []Image{
			{Step: "test", Ref: "golang:1.26", Digest: "sha256:" + hexOf("golang")},
			{Step: "build", Ref: "golang:1.26", Digest: hexOf("golang")},
			{Step: "deps", Ref: "alpine@sha256:" + hexOf("alpine"), Digest: hexOf("alpine")},
		},
		Dependencies: []Dependency{
			{Step: "deps", URL: "https://goproxy.example.org/golang.org/x/sys/@v/v0.50.0.zip", SHA256: hexOf("sys"),
				Size: 1234567, BytesIn: 1240000, BytesOut: 512, Method: "GET", Module: "golang.org/x/sys", Version: "v0.50.0"},
			{Step: "deps", URL: "https://objects.example.com/blob.tgz?X-Amz-Signature=deadbeef&v=2", SHA256: hexOf("blob"),
				Size: 10, BytesIn: 700, BytesOut: 300, Method: "GET"},
			{Step: "build", URL: "sumdb.example.org:443", BytesIn: 4096, BytesOut: 1024},
		},
		Denied: []Denied{
			{Step: "test", Host: "example.org", Port: 443, Reason: "not in allowlist", Count: 2},
			{Step: "build", Host: "10.0.0.1", Port: 80, Reason: "private address", Count: 1},
			{Step: "test", Host: "example.org", Port: 443, Reason: "not in allowlist", Count: 1},
		},
		Sandbox: map[string]any{
			"backend":      "containerd",
			"versions":     map[string]string{"containerd": "2.4.2", "runc": "1.3.0"},
			"capabilities": []string{},
			"seccomp":      "sha256:" + hexOf("seccomp"),
			"limits": map[string]any{
				"build": map[string]any{"cpus": 2, "memoryBytes": int64(4 << 30), "pids": 512},
			},
		},
		Egress: map[string][]string{
			"deps":  {"sumdb.example.org:443", "goproxy.example.org:443", "goproxy.example.org:443"},
			"build": {},
		},
		Subjects: []Subject{
			{Name: "dist/app", SHA256: hexOf("app")},
			{Name: "dist/app.sbom.json", SHA256: hexOf("sbom")},
		},
		Byproducts: []Byproduct{
			{Name: "summary.json", SHA256: hexOf("summary"), Size: 321},
			{Name: "egress.jsonl", SHA256: hexOf("egress"), Size: 4567},
			{Name: "logs/build.log", SHA256: hexOf("log"), Size: 0},
		},
		Environment: []string{"GOFLAGS", "CGO_ENABLED", "GOFLAGS"},
	}
}
