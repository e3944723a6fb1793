package runner

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cleanroom-ci/cleanroom/runner/pipeline"
	"github.com/cleanroom-ci/cleanroom/sandbox"
	"github.com/cleanroom-ci/cleanroom/sandbox/egress"
)

// SystemBundlePaths are the CA bundle files of the common base images
// (Debian/Ubuntu, Alpine, RHEL/Fedora). With TLS inspection, each one the
// step's image has is covered, read-only, by a copy of itself with the
// run's CA appended.
var SystemBundlePaths = []string{
	"/etc/ssl/certs/ca-certificates.crt",
	"/etc/ssl/cert.pem",
	"/etc/pki/tls/certs/ca-bundle.crt",
}

// InspectTrustDir is where an inspected step finds the run's CA
// certificate (ca.pem) and its image's bundle plus that CA (bundle.pem).
const InspectTrustDir = "/etc/cleanroom/tls"

// maxBundleBytes bounds an image's CA bundle (a full one is ~250 KiB).
const maxBundleBytes = 8 << 20

// ImageFileReader is implemented by executors that can read files of an
// image without running it (sandbox/containerd does). Without it, an
// inspected step's bundle holds the run's CA only.
type ImageFileReader interface {
	ReadImageFiles(ctx context.Context, img sandbox.Image, paths []string, max int64) (map[string][]byte, error)
}

// Inspection is one run's TLS inspection: the CA and, per image, the
// trust files built for it. The CA's private key stays in this process.
type Inspection struct {
	CA  *egress.InspectCA
	dir string // host directory for the trust files; removed by Close

	mu     sync.Mutex
	byImgs map[string]*imageTrust
}

type imageTrust struct {
	mounts []sandbox.Mount
	err    error
	done   chan struct{}
}

// NewInspection mints a CA valid for validity (0: the egress default) for
// steps whose allowlists are rules (audit mode lifts the name constraints)
// and keeps its trust files under dir.
func NewInspection(rules []string, audit bool, validity time.Duration, name, dir string) (*Inspection, error) {
	ca, err := egress.NewInspectCA(egress.InspectCAOptions{Rules: rules, Unconstrained: audit, Validity: validity, Name: name})
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	return &Inspection{CA: ca, dir: dir, byImgs: map[string]*imageTrust{}}, nil
}

// Close removes the trust files.
func (in *Inspection) Close() error {
	if in == nil {
		return nil
	}
	return os.RemoveAll(in.dir)
}

// InspectEnv is what an inspected step gets in its environment: the
// bundle for tools that take one file (OpenSSL, Go, Python requests,
// curl, git) and the CA alone where a tool adds it to its own (Node).
func InspectEnv() map[string]string {
	bundle := InspectTrustDir + "/bundle.pem"
	return map[string]string{
		"SSL_CERT_FILE":         bundle,
		"REQUESTS_CA_BUNDLE":    bundle,
		"CURL_CA_BUNDLE":        bundle,
		"GIT_SSL_CAINFO":        bundle,
		"NODE_EXTRA_CA_CERTS":   InspectTrustDir + "/ca.pem",
		"CLEANROOM_INSPECT_CA":  InspectTrustDir + "/ca.pem",
		"CLEANROOM_INSPECT_TLS": "1",
	}
}

// withEnv sets vars over a sorted KEY=VALUE list (the runner's values win
// over the pipeline's: a step pointing SSL_CERT_FILE elsewhere would only
// break its own downloads).
func withEnv(env []string, vars map[string]string) []string {
	if len(vars) == 0 {
		return env
	}
	out := make([]string, 0, len(env)+len(vars))
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if _, ok := vars[k]; !ok {
			out = append(out, kv)
		}
	}
	for k, v := range vars {
		out = append(out, k+"="+v)
	}
	slices.Sort(out)
	return out
}

// mounts returns the trust mounts for a step running img, building them
// once per image.
func (in *Inspection) mounts(ctx context.Context, ex sandbox.Executor, img sandbox.Image, log interface{ Warn(string, ...any) }) ([]sandbox.Mount, error) {
	key := img.Digest
	if key == "" {
		key = img.Name + "|" + img.Ref
	}
	in.mu.Lock()
	t, ok := in.byImgs[key]
	if !ok {
		t = &imageTrust{done: make(chan struct{})}
		in.byImgs[key] = t
	}
	in.mu.Unlock()
	if ok {
		<-t.done
		return t.mounts, t.err
	}
	defer close(t.done)
	t.mounts, t.err = in.build(ctx, ex, img, key, log)
	return t.mounts, t.err
}

func (in *Inspection) build(ctx context.Context, ex sandbox.Executor, img sandbox.Image, key string, log interface{ Warn(string, ...any) }) ([]sandbox.Mount, error) {
	ca := in.CA.CertPEM()
	sum := sha256.Sum256([]byte(key))
	dir := filepath.Join(in.dir, hex.EncodeToString(sum[:8]))
	if err := os.MkdirAll(filepath.Join(dir, "tls"), 0o755); err != nil {
		return nil, err
	}
	var files map[string][]byte
	if r, ok := ex.(ImageFileReader); ok {
		var err error
		files, err = r.ReadImageFiles(ctx, img, SystemBundlePaths, maxBundleBytes)
		if err != nil {
			return nil, fmt.Errorf("TLS inspection: read the CA bundle of image %s: %w", img.Ref, err)
		}
	} else {
		log.Warn("TLS inspection: the executor cannot read image files; the step's bundle holds the run's CA only", "image", img.Ref)
	}
	var ms []sandbox.Mount
	var main []byte
	for i, p := range SystemBundlePaths {
		data, ok := files[p]
		if !ok {
			continue
		}
		combined := appendPEM(data, ca)
		if main == nil {
			main = combined
		}
		f := filepath.Join(dir, fmt.Sprintf("bundle-%d.pem", i))
		if err := os.WriteFile(f, combined, 0o444); err != nil {
			return nil, err
		}
		ms = append(ms, sandbox.Mount{Source: f, Destination: p, ReadOnly: true})
	}
	if main == nil {
		main = ca
	}
	if err := os.WriteFile(filepath.Join(dir, "tls", "ca.pem"), ca, 0o444); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "tls", "bundle.pem"), main, 0o444); err != nil {
		return nil, err
	}
	ms = append(ms, sandbox.Mount{Source: filepath.Join(dir, "tls"), Destination: InspectTrustDir, ReadOnly: true})
	return ms, nil
}

func appendPEM(bundle, cert []byte) []byte {
	out := append([]byte(nil), bundle...)
	if len(out) > 0 && !bytes.HasSuffix(out, []byte("\n")) {
		out = append(out, '\n')
	}
	out = append(out, "# cleanroom: this run's TLS inspection CA\n"...)
	return append(out, cert...)
}

// stepInspect says whether a step is inspected: always in an offline run
// (where HTTPS can only be answered from recorded bodies through
// inspection) and when --require-inspection names one of its rules (a
// protection against domain fronting, which a step must not opt out of);
// else the step's own egress.inspect when it sets one, so a step whose
// client refuses the run's CA keeps its "inspect: false" under --inspect
// too (the docs' advice for such clients); else --inspect or the
// pipeline's egress.inspect.
func stepInspect(cfg Config, s pipeline.Step) bool {
	if cfg.Offline || cfg.Replay != nil || requiresInspection(cfg, s) {
		return true
	}
	if s.Egress != nil && s.Egress.Inspect != nil {
		return *s.Egress.Inspect
	}
	return cfg.Inspect || cfg.Pipeline.StepInspect(s)
}

// requiresInspection reports whether one of the step's egress rules can
// reach a destination named by --require-inspection: reaching such a host
// through an opaque tunnel would allow domain fronting (an allowed SNI,
// another Host inside the TLS), so the step's TLS is inspected and a
// mismatched Host refused. Rules are compared parsed, not as text, so that
// "CDN.example.com", "cdn.example.com.", "cdn.example.com:443" or
// "*.example.com" cannot slip past "cdn.example.com". A rule that does not
// parse counts as a match: the policy refuses it later anyway, and
// inspecting by mistake is the safe side.
func requiresInspection(cfg Config, s pipeline.Step) bool {
	if len(cfg.RequireInspection) == 0 {
		return false
	}
	rules := slices.Concat(cfg.Pipeline.StepAllow(s), cfg.ExtraAllow)
	for _, want := range cfg.RequireInspection {
		w, err := egress.ParseRule(want)
		if err != nil {
			return true
		}
		for _, r := range rules {
			sr, err := egress.ParseRule(r)
			if err != nil || egress.Overlaps(w, sr) {
				return true
			}
		}
	}
	return false
}

// stepCache returns a step's cache mode: --cache-mode, else egress.cache.
func stepCache(cfg Config, s pipeline.Step) string {
	if cfg.CacheMode != "" {
		return cfg.CacheMode
	}
	return cfg.Pipeline.StepCache(s)
}

// setupInspection mints the run's CA when a selected step is inspected.
// The CA's name constraints cover the union of the inspected steps'
// allowlists.
func setupInspection(cfg Config, steps []pipeline.Step) (*Inspection, error) {
	var rules []string
	audit, any := cfg.EgressMode == pipeline.EgressAudit, false
	// The CA is valid for as long as the run can last: the steps' time
	// limits together, plus an hour.
	validity := time.Hour
	for _, s := range steps {
		validity += s.Timeout
		if !stepInspect(cfg, s) {
			continue
		}
		any = true
		rules = append(rules, cfg.Pipeline.StepAllow(s)...)
		if cfg.EgressMode == "" && cfg.Pipeline.StepEgressMode(s) == pipeline.EgressAudit {
			audit = true
		}
	}
	if !any {
		return nil, nil
	}
	rules = append(rules, cfg.ExtraAllow...)
	dir := filepath.Join(cfg.StateDir, "tls", cfg.RunID)
	if cfg.ws != nil && cfg.ws.Mode == WorkspaceFresh && cfg.ws.img != "" {
		// On the run's own filesystem, beside /workspace: the trust files
		// are bind-mounted, and /proc/self/mountinfo in the step then
		// shows /tls/… on a loop device, not the state directory's path.
		dir = filepath.Join(cfg.ws.mnt, "tls")
	}
	return NewInspection(rules, audit, validity, cfg.RunID, dir)
}

// egressExtras is what inspection, the store and replay add to one
// sandboxed step.
type egressExtras struct {
	mounts []sandbox.Mount
	env    map[string]string
}

// sandboxExtras completes a step's proxy configuration and returns its
// trust mounts and variables.
func sandboxExtras(ctx context.Context, env SandboxEnv, st SandboxedStep, pc *egress.Config, log interface{ Warn(string, ...any) }) (egressExtras, error) {
	var ex egressExtras
	pc.TLSConfig = env.TLSConfig
	pc.Offline, pc.Replay = env.Offline, env.Replay
	if env.Store != nil {
		mode, err := egress.ParseCacheMode(st.Cache)
		if err != nil {
			return ex, err
		}
		pc.Store, pc.Cache = env.Store, mode
	}
	if (st.Inspect || env.Offline) && env.Inspect != nil {
		pc.Inspect = env.Inspect.CA
		ms, err := env.Inspect.mounts(ctx, env.Executor, st.Image, log)
		if err != nil {
			return ex, err
		}
		ex.mounts, ex.env = ms, InspectEnv()
	}
	return ex, nil
}

// materialsRun is the per-run state of inspection, the store and the
// lockfile check.
type materialsRun struct {
	inspection *Inspection
	declared   declared
}

func (m *materialsRun) close() { m.inspection.Close() }

// startMaterials mints the run's CA if a step is inspected and reads the
// lockfiles before any step can change them.
func startMaterials(cfg *Config, steps []pipeline.Step) (*materialsRun, error) {
	if (cfg.Offline || cfg.Replay != nil) && cfg.Store == nil {
		return nil, errors.New("an offline or replay run needs the store (--cache DIR)")
	}
	if r := cfg.Replay; r != nil && r.PipelineSHA256 != "" && r.PipelineSHA256 != cfg.Pipeline.Digest && cfg.Logger != nil {
		cfg.Logger.Warn("replay: the pipeline file differs from the one the provenance records; requests it makes that the recorded run did not are denied",
			"recorded", r.PipelineSHA256, "now", cfg.Pipeline.Digest)
	}
	in, err := setupInspection(*cfg, steps)
	if err != nil {
		return nil, fmt.Errorf("TLS inspection: %w", err)
	}
	cfg.inspection = in
	return &materialsRun{inspection: in, declared: readLockfiles(cfg.Workspace, cfg.OutDir)}, nil
}

// finishMaterials compares lockfiles with fetches and, in a replay, the
// artifacts with the recorded ones.
func finishMaterials(cfg Config, m *materialsRun, res *Result) {
	res.LockfileCheck = checkLockfiles(m.declared, res.Events, cfg.Store)
	if cfg.Replay != nil && res.Failed == "" {
		res.Replay = cfg.Replay.Compare(res.Subjects)
		if r := cfg.Replay; r.WorkspaceSHA256 != "" && r.WorkspaceSHA256 != res.WorkspaceSHA256 {
			res.Replay.WorkspaceDiffers, res.Replay.Reproduced = true, false
			res.Replay.RecordedWorkspace, res.Replay.ReplayedWorkspace = r.WorkspaceSHA256, res.WorkspaceSHA256
		}
	}
}

// materialsInternal is what the provenance records about inspection, the
// cache, a replay and the lockfile check (internalParameters).
func materialsInternal(cfg Config, res *Result) map[string]any {
	out := map[string]any{}
	if res.LockfileCheck != nil {
		out["lockfileCheck"] = res.LockfileCheck
	}
	var inspected []string
	for _, s := range res.Steps {
		if s.Status == "skipped" {
			continue
		}
		if st, ok := stepByName(cfg.Pipeline, s.Name); ok && cfg.inspectionFor(st) {
			inspected = append(inspected, s.Name)
		}
	}
	mat := map[string]any{}
	if len(inspected) > 0 {
		mat["tlsInspected"] = inspected
	}
	if cfg.Store != nil {
		mat["store"] = true
	}
	if cfg.Offline || cfg.Replay != nil {
		mat["offline"] = true
	}
	if cfg.Replay != nil {
		rep := map[string]any{"provenance": filepath.Base(cfg.Replay.Path), "sha256": cfg.Replay.SHA256}
		if res.Replay != nil {
			rep["reproduced"] = res.Replay.Reproduced
		}
		mat["replayOf"] = rep
	}
	if len(mat) > 0 {
		out["materials"] = mat
	}
	return out
}

func (c Config) inspectionFor(s pipeline.Step) bool {
	return c.inspection != nil && stepInspect(c, s)
}

func stepByName(p *pipeline.Pipeline, name string) (pipeline.Step, bool) {
	for _, s := range p.Steps {
		if s.Name == name {
			return s, true
		}
	}
	return pipeline.Step{}, false
}
