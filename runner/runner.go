// Package runner is cleanroom's engine. Given a validated pipeline and a
// sandbox.Executor it runs the selected steps in order, each in a fresh
// sandbox whose only way out is an egress proxy it owns, streams their
// output, and reports how each ended. It imports no containerd package: the
// sandbox is a seam, so the engine's logic does not depend on a daemon.
package runner

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/cleanroom-ci/cleanroom/runner/manifest"
	"github.com/cleanroom-ci/cleanroom/runner/pipeline"
	"github.com/cleanroom-ci/cleanroom/runner/services"
	"github.com/cleanroom-ci/cleanroom/runner/vary"
	"github.com/cleanroom-ci/cleanroom/sandbox"
	"github.com/cleanroom-ci/cleanroom/sandbox/egress"
	"github.com/cleanroom-ci/cleanroom/sandbox/egress/store"
)

// Config is one run.
type Config struct {
	Pipeline *pipeline.Pipeline
	// Steps selects a subset by name (--step); empty runs all.
	Steps []string
	// Workspace is the source directory. By default the steps run in a
	// fresh copy of it (workspace.go) and only the artifacts are copied
	// back; ReuseWorkspace mounts it itself at /workspace, read-write, and
	// the provenance then records the workspace as reused.
	Workspace      string
	ReuseWorkspace bool
	// WorkspaceSize bounds the fresh workspace's filesystem, in bytes (0:
	// DefaultWorkspaceSize; negative: a plain directory, no limit).
	WorkspaceSize int64
	// ArtifactSizeLimit caps each artifact, in bytes (0:
	// DefaultArtifactSizeLimit; negative: no cap).
	ArtifactSizeLimit int64
	// LogLimit caps each step's log file, in bytes (0: DefaultLogLimit;
	// negative: no cap).
	LogLimit int64
	// OutDir receives logs, the egress log and the summary. Files are
	// written to a staging directory outside the workspace while steps
	// run and moved into OutDir at the end, so a step cannot forge them.
	OutDir string
	// StateDir holds the run's staging directory and namespace files.
	StateDir string
	// RunID tags everything the run creates (see internal/runlock).
	RunID string
	// ExtraAllow is added to every step's allowlist (--allow).
	ExtraAllow []string
	// EgressMode overrides the pipeline's mode when set (--egress-mode).
	EgressMode string
	// Secrets are given to every step as environment variables, by name;
	// their values are masked in step output and logs and never recorded.
	Secrets map[string]string
	// Signer signs the artifacts and the provenance of a successful run;
	// nil means no signing. A failed run signs nothing.
	Signer Signer
	// GoModUpstream is the module proxy behind the /gomod/ endpoint.
	GoModUpstream *url.URL
	// Executor runs the sandboxes.
	Executor sandbox.Executor
	// Runtime overrides the pipeline's runtime when set (--runtime).
	Runtime string
	// Output receives the steps' output, each line prefixed by the step.
	Output io.Writer
	Logger hclog.Logger
	// BuilderID, InvocationID and Version go into the provenance.
	BuilderID    string
	InvocationID string
	Version      string
	// Hooks for tests and tracing; may be nil.
	Trace sandbox.TraceFunc
	// Progress is told about long work as it happens (progress.go).
	Progress Progress

	// Inspect turns TLS inspection on for every step (--inspect); the
	// pipeline's egress.inspect can turn it on per step.
	Inspect bool
	// RequireInspection names egress rules whose steps are always
	// inspected (--require-inspection), whatever the pipeline says.
	RequireInspection []string
	// Store keeps every downloaded body (nil: none); CacheMode overrides
	// egress.cache ("record", "prefer", "off") when set.
	Store     *store.Store
	CacheMode string
	// UpstreamTLS verifies https upstreams (nil: the host's roots).
	UpstreamTLS *tls.Config
	// Offline answers only from Store, Replay only the recorded materials
	// of a provenance, whose artifacts the run's are then compared with.
	Offline bool
	Replay  *Replay

	// SourceDateEpoch is given to every step as SOURCE_DATE_EPOCH unless the
	// pipeline sets it; nil takes it from the source (the commit time of
	// HEAD when the workspace is a git work tree, or the value a replayed
	// provenance records). See sourceDateEpoch in rebuild.go.
	SourceDateEpoch *int64
	// Vary changes what a reproducible build must not depend on (cleanroom
	// rebuild); nil is an ordinary run. VaryBuild numbers the build, so that
	// each varies differently.
	Vary      *vary.Plan
	VaryBuild int
	// ArtifactsDir receives the artifacts of a fresh workspace (default:
	// Workspace, where the user expects them). A rebuild keeps each build's
	// apart.
	ArtifactsDir string
	// ExcludeDirs are further directories (absolute) never copied into the
	// fresh workspace, like the output directory: a rebuild's earlier
	// outputs are not source.
	ExcludeDirs []string

	inspection *Inspection   // the run's CA, set by Run (inspect.go)
	ws         *runWorkspace // where the steps run, set by Run
	sde        *epoch        // SOURCE_DATE_EPOCH of the steps, set by Run
}

// Result is the outcome of a run.
type Result struct {
	RunID  string        `json:"runId"`
	Steps  []StepResult  `json:"steps"`
	Images []ImageResult `json:"images"`
	Failed string        `json:"failedStep,omitempty"`
	// Error explains a failure that is not a step's exit status (an
	// artifact glob that matches nothing or points outside the workspace).
	Error    string             `json:"error,omitempty"`
	Subjects []manifest.Subject `json:"artifacts,omitempty"`
	// Provenance is the path of the in-toto statement written.
	Provenance string `json:"provenance,omitempty"`
	// Bundles are the Sigstore bundles written (artifacts, provenance).
	Bundles  []string  `json:"bundles,omitempty"`
	SignedBy string    `json:"signedBy,omitempty"`
	OutDir   string    `json:"outDir"`
	Started  time.Time `json:"startedOn"`
	Finished time.Time `json:"finishedOn"`
	// Events are the egress decisions of every step, in order.
	Events []egress.Event `json:"-"`
	// Sandbox describes the backend and hardening for provenance.
	Sandbox sandbox.Info `json:"-"`
	// LockfileCheck compares the lockfiles with what was fetched;
	// Replay is set by a --replay run (inspect.go, replay.go).
	LockfileCheck *manifest.LockfileCheck `json:"lockfileCheck,omitempty"`
	Replay        *ReplayResult           `json:"replay,omitempty"`
	// SourceDateEpoch is what the steps got as SOURCE_DATE_EPOCH (nil: not
	// set); WorkspaceSHA256 is the tree digest of the workspace before the
	// first step.
	SourceDateEpoch *epoch     `json:"sourceDateEpoch,omitempty"`
	WorkspaceSHA256 string     `json:"workspaceSha256,omitempty"`
	Vary            *vary.Plan `json:"variations,omitempty"`
}

// StepResult is how one step ended.
type StepResult struct {
	Name      string          `json:"name"`
	Image     string          `json:"image"`
	Status    string          `json:"status"` // ok, failed, timeout, oom, cancelled, skipped
	ExitCode  int             `json:"exitCode"`
	Duration  time.Duration   `json:"-"`
	DurationS float64         `json:"durationSeconds"`
	Allow     []string        `json:"egressAllow"`
	Mode      string          `json:"egressMode"`
	Denials   []egress.Denial `json:"denials,omitempty"`
	WouldNeed []string        `json:"wouldNeed,omitempty"`
	LogFile   string          `json:"log,omitempty"`
	// WorkspaceBefore and WorkspaceAfter are the workspace's tree digests
	// when the step started and ended (manifest.TreeDigest): two builds
	// diverge at the first step whose after differs.
	WorkspaceBefore string `json:"workspaceBefore,omitempty"`
	WorkspaceAfter  string `json:"workspaceAfter,omitempty"`
	// Services are the step's services and how each ended.
	Services []services.Status `json:"services,omitempty"`
}

// ImageResult records an image by digest.
type ImageResult struct {
	Ref    string   `json:"ref"`
	Digest string   `json:"digest"`
	Steps  []string `json:"steps"`
	// Services are the services that ran this image.
	Services []ServiceRef `json:"services,omitempty"`
}

// ServiceRef names a service: its step and alias.
type ServiceRef struct {
	Step  string `json:"step"`
	Alias string `json:"alias"`
}

// ArtifactsStep is Result.Failed when the steps succeeded but the
// artifacts could not be collected.
const ArtifactsStep = "(artifacts)"

// ErrCancelled is returned when the run was interrupted.
var ErrCancelled = errors.New("run cancelled")

// Run runs the pipeline. A step that fails is reported in Result.Failed
// with a nil error; an error means the run itself could not be carried
// out (configuration or infrastructure), or was cancelled.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Output == nil {
		cfg.Output = io.Discard
	}
	if cfg.Trace != nil {
		ctx = sandbox.WithTrace(ctx, cfg.Trace)
	}
	runStart := time.Now()
	defer func() { cfg.trace("run", runStart, time.Now()) }()
	p := cfg.Pipeline
	steps, err := p.Select(cfg.Steps)
	if err != nil {
		return nil, err
	}
	if cfg.EgressMode != "" {
		if _, err := egress.ParseMode(cfg.EgressMode); err != nil {
			return nil, err
		}
	}
	res := &Result{RunID: cfg.RunID, OutDir: cfg.OutDir, Started: time.Now().UTC()}
	stage := filepath.Join(cfg.StateDir, "runs", cfg.RunID)
	if err := os.MkdirAll(filepath.Join(stage, "logs"), 0o700); err != nil {
		return nil, err
	}
	defer os.RemoveAll(stage)

	info, err := cfg.Executor.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	res.Sandbox = info
	// The runtime the steps run under is settled (and checked to be
	// installed) before anything runs: a pipeline asking for gVisor on a
	// host without it fails as a configuration error, not mid-run.
	if rr, ok := cfg.Executor.(sandbox.RuntimeResolver); ok {
		want := cfg.Runtime
		if want == "" {
			want = p.Runtime
		}
		name, version, err := rr.ResolveRuntime(want)
		if err != nil {
			return nil, fmt.Errorf("sandbox: %w", err)
		}
		res.Sandbox.Runtime, res.Sandbox.RuntimeVersion = name, version
	}
	// The output directory describes one run: what an earlier run left
	// there goes before anything else can fail.
	if err := clearOutputs(cfg); err != nil {
		return nil, fmt.Errorf("output directory %s: %w", cfg.OutDir, err)
	}

	if err := replayPreflight(cfg); err != nil { // rebuild.go
		return nil, err
	}
	images, err := resolveImages(ctx, cfg, steps, res)
	if err != nil {
		return nil, err
	}
	imageDiffs := replayImages(cfg, res)
	start := time.Now()
	if cfg.ReuseWorkspace {
		cfg.ws = reusedWorkspace(cfg)
	} else {
		if cfg.ws, err = freshWorkspace(ctx, cfg); err != nil {
			return nil, err
		}
		cfg.Logger.Debug("fresh workspace", "files", cfg.ws.Files, "bytes", cfg.ws.Bytes, "took", cfg.ws.Took)
	}
	defer func() {
		if err := cfg.ws.remove(); err != nil {
			cfg.Logger.Warn("cannot remove the run's workspace", "error", err)
		}
	}()
	cfg.trace("workspace.prepare", start, time.Now(), "mode", cfg.ws.Mode)
	start = time.Now()
	in, err := snapshotInputs(ctx, cfg)
	if err != nil {
		return nil, err
	}
	cfg.trace("workspace.hash", start, time.Now())
	res.WorkspaceSHA256, res.Vary = in.source.TreeSHA256, cfg.Vary
	cfg.sde = sourceDateEpoch(cfg) // rebuild.go
	res.SourceDateEpoch = cfg.sde
	mat, err := startMaterials(&cfg, steps) // inspect.go: CA, lockfiles
	if err != nil {
		return nil, err
	}
	defer mat.close()

	eventsFile, err := os.Create(filepath.Join(stage, "egress.jsonl"))
	if err != nil {
		return nil, err
	}
	defer eventsFile.Close()
	recorder := egress.NewJSONLRecorder(eventsFile)
	// The egress log is published next to the artifacts: credentials in
	// URLs (userinfo, signed-URL parameters) are removed before it is written.
	// Secret values (and their encodings) a step spells into host names or
	// URLs are masked too.
	var next egress.Recorder = recorder
	if cfg.Progress != nil {
		next = progressRecorder{next: recorder, p: cfg.Progress}
	}
	rec := RedactingRecorder(next, cfg.Secrets)

	// While a step runs, the next one is prepared (namespace, proxy,
	// container and task created): most of a step's start-up overlaps the
	// step before it. A prepared step that will not run is discarded.
	ahead := newLookahead(ctx, cfg, steps, images, stage, rec)
	defer ahead.discard()
	var runErr error
	before := in.source.TreeSHA256
	for i, step := range steps {
		if runErr != nil || res.Failed != "" {
			ahead.discard()
			res.Steps = append(res.Steps, StepResult{Name: step.Name, Image: p.StepImage(step), Status: "skipped"})
			continue
		}
		cur, sr, err := ahead.take(i)
		if err != nil {
			res.Steps = append(res.Steps, sr)
			runErr = err
			continue
		}
		ahead.prepareAfter(i)
		sr, err = cur.run(ctx)
		if err == nil {
			sr.WorkspaceBefore = before
			if before, err = workspaceDigest(ctx, cfg); err != nil {
				err = fmt.Errorf("hash the workspace after step %q: %w", step.Name, err)
			}
			sr.WorkspaceAfter = before
		}
		res.Steps = append(res.Steps, sr)
		if err != nil {
			runErr = err
			continue
		}
		if sr.Status != "ok" {
			res.Failed = step.Name
		}
	}
	res.Events = recorder.Events()
	if runErr == nil && res.Failed == "" && len(p.Artifacts) > 0 {
		done := cfg.begin("hashing the artifacts")
		subjects, err := collectArtifacts(ctx, cfg, p.Artifacts)
		done()
		switch {
		case ctx.Err() != nil:
			// An interrupt while hashing is a cancel, not the step's
			// failure (the hashing deadline is its own context).
			runErr = ErrCancelled
		case err != nil:
			res.Failed, res.Error = ArtifactsStep, err.Error()
			cfg.Logger.Error("artifacts", "error", err)
		default:
			res.Subjects = subjects
			if err := publishArtifacts(cfg, subjects); err != nil {
				runErr = fmt.Errorf("artifacts: %w", err)
			}
		}
	}
	finishMaterials(cfg, mat, res)
	if res.Replay != nil && len(imageDiffs) > 0 {
		res.Replay.Images, res.Replay.Reproduced = imageDiffs, false
	}
	res.Finished = time.Now().UTC()
	if err := eventsFile.Sync(); err != nil && runErr == nil {
		runErr = err
	}
	if err := writeSummary(stage, res); err != nil && runErr == nil {
		runErr = err
	}
	if runErr == nil {
		start := time.Now()
		if err := writeProvenance(cfg, res, in, stage); err != nil {
			runErr = fmt.Errorf("provenance: %w", err)
		}
		cfg.trace("provenance", start, time.Now())
	}
	if runErr == nil && res.Failed == "" && cfg.Signer != nil {
		if err := signOutputs(ctx, cfg, res, stage); err != nil {
			runErr = fmt.Errorf("signing: %w", err)
		}
	}
	if err := publish(cfg, stage); err != nil && runErr == nil {
		runErr = fmt.Errorf("write outputs to %s: %w", cfg.OutDir, err)
	}
	return res, runErr
}

// lookaheadDepth is how many steps are prepared ahead of the one running.
// One hides the next step's start-up (the shim starting, runc create:
// about 280 ms) behind a step that waits on I/O or the network; measured,
// two gained nothing more, and on a busy CPU no depth helps (the start-up
// is CPU work then).
const lookaheadDepth = 1

// lookahead prepares the steps after the running one in the background.
type lookahead struct {
	ctx     context.Context
	cfg     Config
	steps   []pipeline.Step
	images  map[string]sandbox.Image
	stage   string
	rec     egress.Recorder
	pending map[int]chan prepared
}

type prepared struct {
	run *stepRun
	sr  StepResult
	err error
}

func newLookahead(ctx context.Context, cfg Config, steps []pipeline.Step, images map[string]sandbox.Image, stage string, rec egress.Recorder) *lookahead {
	return &lookahead{ctx: ctx, cfg: cfg, steps: steps, images: images, stage: stage, rec: rec, pending: map[int]chan prepared{}}
}

func (l *lookahead) prepareNow(i int) prepared {
	step := l.steps[i]
	svcs := pipelineServices(l.cfg, step, l.images, l.stage) // service.go
	r, sr, err := prepareStep(l.ctx, l.cfg, i, step, l.images[l.cfg.Pipeline.StepImage(step)], svcs, l.stage, l.rec)
	return prepared{run: r, sr: sr, err: err}
}

// prepareAfter starts preparing the steps after i, up to lookaheadDepth.
func (l *lookahead) prepareAfter(i int) {
	for j := i + 1; j <= i+lookaheadDepth && j < len(l.steps); j++ {
		if _, ok := l.pending[j]; ok {
			continue
		}
		ch := make(chan prepared, 1)
		l.pending[j] = ch
		go func() { ch <- l.prepareNow(j) }()
	}
}

// take returns step i, prepared ahead or now.
func (l *lookahead) take(i int) (*stepRun, StepResult, error) {
	ch, ok := l.pending[i]
	if !ok {
		p := l.prepareNow(i)
		return p.run, p.sr, p.err
	}
	delete(l.pending, i)
	p := <-ch
	return p.run, p.sr, p.err
}

// discard removes every step prepared ahead.
func (l *lookahead) discard() {
	for i, ch := range l.pending {
		if p := <-ch; p.run != nil {
			p.run.discard()
		}
		delete(l.pending, i)
	}
}

func resolveImages(ctx context.Context, cfg Config, steps []pipeline.Step, res *Result) (map[string]sandbox.Image, error) {
	p := cfg.Pipeline
	images := map[string]sandbox.Image{}
	byRef := map[string]*ImageResult{}
	var order []string
	use := func(written string, ref pipeline.ImageRef, what string) (*ImageResult, error) {
		if _, ok := images[written]; !ok {
			start := time.Now()
			done := cfg.begin(imageWork(ref) + " " + written)
			img, err := cfg.Executor.Resolve(ctx, ref.String())
			done()
			if err != nil {
				return nil, fmt.Errorf("%s: image %s: %w", what, written, err)
			}
			cfg.trace("image.resolve", start, time.Now(), "ref", written)
			img.Ref = written
			images[written] = img
			cfg.Logger.Info("image ready", "ref", written, "digest", img.Digest)
		}
		ir, ok := byRef[written]
		if !ok {
			ir = &ImageResult{Ref: written, Digest: images[written].Digest, Steps: []string{}}
			byRef[written] = ir
			order = append(order, written)
		}
		return ir, nil
	}
	for _, s := range steps {
		ir, err := use(p.StepImage(s), p.StepImageRef(s), fmt.Sprintf("step %q", s.Name))
		if err != nil {
			return nil, err
		}
		ir.Steps = append(ir.Steps, s.Name)
	}
	// Service images after the steps' (service.go).
	for _, s := range steps {
		for _, svc := range p.StepServices(s) {
			ir, err := use(svc.Image, p.ServiceImageRef(svc), fmt.Sprintf("step %q: service %q", s.Name, svc.Alias))
			if err != nil {
				return nil, err
			}
			ir.Services = append(ir.Services, ServiceRef{Step: s.Name, Alias: svc.Alias})
		}
	}
	res.Images = res.Images[:0]
	for _, written := range order {
		res.Images = append(res.Images, *byRef[written])
	}
	return images, nil
}

func (c Config) trace(span string, start, end time.Time, attrs ...any) {
	if c.Trace != nil {
		c.Trace(span, start, end, attrs...)
	}
}

func writeProvenance(cfg Config, res *Result, in inputs, stage string) error {
	bp, err := byproducts(stage)
	if err != nil {
		return err
	}
	st, err := manifest.Build(provenanceInput(cfg, res, in, res.Subjects, bp))
	if err != nil {
		return err
	}
	if err := manifest.WriteFile(filepath.Join(stage, ProvenanceFile), st); err != nil {
		return err
	}
	res.Provenance = filepath.Join(cfg.OutDir, ProvenanceFile)
	return nil
}

// RedactingRecorder wraps an egress recorder so that no event it passes on
// carries a credential: URLs lose their userinfo and the values of
// credential-like query parameters (manifest.RedactURL), and every value of
// secrets, with its common encodings, is masked in the URL, host, reason,
// rule and module fields. Every recording path (runner.Run, the GitLab
// driver's stages) goes through it: the egress log is published next to
// the artifacts and read back into provenance.
func RedactingRecorder(next egress.Recorder, secrets map[string]string) egress.Recorder {
	return redactingRecorder{next: next, mask: newMasker(secrets)}
}

type redactingRecorder struct {
	next egress.Recorder
	mask *masker
}

func (r redactingRecorder) Record(e egress.Event) {
	e.URL = r.mask.String(manifest.RedactURL(e.URL))
	e.Host, e.Reason, e.Rule = r.mask.String(e.Host), r.mask.String(e.Reason), r.mask.String(e.Rule)
	e.Module, e.Version = r.mask.String(e.Module), r.mask.String(e.Version)
	r.next.Record(e)
}
