package gitlab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/cleanroom-ci/cleanroom/internal/flock"
	"github.com/cleanroom-ci/cleanroom/internal/runlock"
	"github.com/cleanroom-ci/cleanroom/runner"
	"github.com/cleanroom-ci/cleanroom/runner/pipeline"
	"github.com/cleanroom-ci/cleanroom/sandbox"
)

// Prepare answers prepare_exec: check the job against the policy, make
// its images available, create its directories and record the decisions
// for the later calls. It can run several times for one job (the runner
// retries, with cleanup in between) and starts from scratch each time.
func (d *Driver) Prepare(ctx context.Context) error {
	resp, err := ReadResponse(d.Contract.JobResponseFile)
	if err != nil {
		return err
	}
	log := d.log().With("job", resp.ID)
	p := d.Policy

	dec, err := d.decide(resp)
	if err != nil {
		return err
	}
	image, jobImage, helperImage := dec.image, dec.jobImage, dec.helperImage
	allow, requested, helperAllow, serverURL := dec.allow, dec.requested, dec.helperAllow, dec.serverURL

	job, err := openJob(d.StateDir, resp.ID, true, lockWaitRun)
	if err != nil {
		return err
	}
	defer job.close()
	// A retried prepare starts over: nothing of the failed attempt's
	// records may pass for this one's.
	for _, f := range []string{jobFile, stagesFile, egressFile, provenanceMark} {
		os.Remove(job.file(f))
	}
	os.RemoveAll(job.file(scriptsDir))

	buildsDir, cacheDir := d.buildsDir(resp), d.cacheDir(resp)
	if err := makeJobDirs(p, buildsDir, cacheDir); err != nil {
		return err
	}

	lock, backend, err := d.openBackend(ctx, log)
	if err != nil {
		return err
	}
	defer lock.Release()
	defer backend.Close()

	unlockImages, err := lockImages(d.StateDir, flock.Shared, false)
	if err != nil {
		return err
	}
	defer unlockImages()
	img, err := d.resolve(ctx, backend, jobImage, resp.RegistryAuth)
	if err != nil {
		return fmt.Errorf("job image %s: %w", image, err)
	}
	himg, err := d.resolve(ctx, backend, helperImage, nil)
	if err != nil {
		return fmt.Errorf("helper image %s: %w", p.HelperImage, err)
	}
	svcs, err := d.resolveServices(ctx, backend, resp, dec.svcReqs, dec.svcRefs)
	if err != nil {
		return err
	}
	used := []string{img.Name, himg.Name}
	for _, s := range svcs {
		used = append(used, s.Image.Name)
	}
	if err := noteImageUse(d.StateDir, d.timeNow(), used...); err != nil {
		return err
	}

	timeout := time.Duration(resp.RunnerInfo.Timeout) * time.Second
	if timeout <= 0 {
		timeout = defaultJobTimeout
	}
	now := d.timeNow().UTC()
	st := &JobState{
		JobID:        resp.ID,
		ProjectID:    resp.JobInfo.ProjectID,
		Prepared:     now,
		Deadline:     now.Add(timeout + deadlineMargin),
		ResponseFile: d.Contract.JobResponseFile,
		BuildsDir:    buildsDir,
		CacheDir:     cacheDir,
		ProjectDir:   d.projectDir(resp, buildsDir),
		Image:        ImageState{Ref: image, Name: img.Name, Digest: img.Digest},
		Helper:       ImageState{Ref: p.HelperImage, Name: himg.Name, Digest: himg.Digest},
		Allow:        allow,
		Requested:    requested,
		HelperAllow:  helperAllow,
		Definition:   resp.Definition(),
		Services:     svcs,
	}
	if err := job.writeState(st); err != nil {
		return err
	}
	w := d.stdout()
	fmt.Fprintf(w, "cleanroom: job image %s (%s)\n", image, img.Digest)
	fmt.Fprintf(w, "cleanroom: helper image %s (%s)\n", p.HelperImage, himg.Digest)
	for _, s := range svcs {
		fmt.Fprintf(w, "cleanroom: service %s (%s) as %s, beside every user stage\n", s.Image.Ref, s.Image.Digest, s.Alias)
	}
	fmt.Fprintf(w, "cleanroom: egress of the job's stages: %s\n", describeAllow(allow))
	fmt.Fprintf(w, "cleanroom: egress of the helper stages: %s\n", describeAllow(helperAllow))
	if serverURL == "" {
		// gitlab-runner's own synthetic jobs ([runners.experimental.
		// boot_verify]) name no instance; they fetch nothing either.
		fmt.Fprintln(w, "cleanroom: the job names no GitLab instance (CI_SERVER_URL is empty, as in gitlab-runner's boot_verify probe): the helper stages reach only helper.allow")
	}
	if len(resp.Secrets(p.RunnerOnly)) > 0 {
		fmt.Fprintf(w, "cleanroom: runner-only variables are kept out of every stage: %s\n", strings.Join(presentKeys(resp, p.RunnerOnly), ", "))
	}
	return nil
}

// decision is what the policy makes of a job, before anything is created.
type decision struct {
	image                 string
	jobImage, helperImage imageRef
	allow, requested      []string
	helperAllow           []string
	serverURL             string
	// services: and their images (services.go)
	svcReqs []ServiceRequest
	svcRefs []imageRef
}

// decide checks the job against the policy: its image, what it asks for
// that cleanroom never does, its egress request, and the helper stages'
// egress (the GitLab instance and helper.allow).
func (d *Driver) decide(resp *Response) (*decision, error) {
	p := d.Policy
	image := resp.Image.Name
	if image == "" {
		image = p.DefaultImage
	}
	if image == "" {
		return nil, &BuildError{Err: errNoImage}
	}
	jobImage, err := ImageAllowed(p.AllowedImages, image)
	if err != nil {
		// As GitLab's own Docker and Kubernetes executors do with an
		// image outside allowed_images ("disallowed image"): a system
		// failure, so the job may be retried on another runner.
		return nil, err
	}
	if err := refuseJobFeatures(resp); err != nil {
		return nil, err
	}
	svcReqs, svcRefs, err := parseServices(p, resp.Services) // services.go
	if err != nil {
		return nil, err
	}
	requestedRaw, _ := resp.Var(EgressRequestVariable)
	requested := ParseEgressRequest(requestedRaw)
	allow, err := EffectiveAllow(p, requested)
	if err != nil {
		return nil, &BuildError{Err: err}
	}
	serverURL, _ := resp.Var("CI_SERVER_URL")
	helperAllow := append([]string{}, p.HelperAllow...)
	if serverURL != "" {
		serverRule, err := ServerRule(serverURL)
		if err != nil {
			return nil, err
		}
		helperAllow = append([]string{serverRule}, helperAllow...)
	}
	helperImage, err := parseImage(p.HelperImage)
	if err != nil {
		return nil, err
	}
	return &decision{image: image, jobImage: jobImage, helperImage: helperImage, allow: allow, requested: requested,
		helperAllow: helperAllow, serverURL: serverURL, svcReqs: svcReqs, svcRefs: svcRefs}, nil
}

// refuseJobFeatures fails a job asking for what cleanroom never does, as
// the job's fault (not retried), naming the keyword and why.
func refuseJobFeatures(resp *Response) error {
	for _, h := range resp.Hooks {
		if len(h.Script) == 0 {
			continue
		}
		return buildErrorf("hooks:%s is not supported by this runner (cleanroom): gitlab-runner runs it inside get_sources, the stage that can reach GitLab with the job token, and cleanroom never runs the job's code there; move the commands to before_script", h.Name)
	}
	return nil
}

func describeAllow(a []string) string {
	if len(a) == 0 {
		return "none"
	}
	return strings.Join(a, ", ")
}

func presentKeys(r *Response, keys []string) []string {
	var out []string
	for _, v := range r.Secrets(keys) {
		out = append(out, v.Key)
	}
	return out
}

// makeJobDirs creates the roots closed to other host users, and the job's
// own directories open to whatever user the job image runs as (the
// directories are mounted into the sandbox, where host users do not exist;
// the roots above them stay closed on the host).
func makeJobDirs(p *Policy, buildsDir, cacheDir string) error {
	for _, root := range []string{p.BuildsDir, p.CacheDir} {
		if err := os.MkdirAll(root, 0o700); err != nil {
			return err
		}
		os.Chmod(root, 0o700)
	}
	// Whatever a failed attempt left is removed: a job starts with an
	// empty builds directory.
	if err := os.RemoveAll(buildsDir); err != nil {
		return err
	}
	if err := os.Mkdir(buildsDir, 0o777); err != nil {
		return err
	}
	if err := os.Chmod(buildsDir, 0o777); err != nil {
		return err
	}
	if err := os.MkdirAll(cacheDir, 0o777); err != nil {
		return err
	}
	return os.Chmod(cacheDir, 0o777)
}

// projectDir is CI_PROJECT_DIR: what the runner says
// (CUSTOM_ENV_CI_PROJECT_DIR, which a job could override) when that lies
// inside the job's builds directory, else what the runner would compute
// (<builds_dir>/<project slug>). Either way it is inside the job's own
// directory, the only place the driver ever writes to.
func (d *Driver) projectDir(r *Response, buildsDir string) string {
	if hint := d.getenv("CUSTOM_ENV_CI_PROJECT_DIR"); hint != "" && filepath.IsAbs(hint) {
		hint = filepath.Clean(hint)
		if strings.HasPrefix(hint, buildsDir+"/") {
			return hint
		}
	}
	return filepath.Join(buildsDir, filepath.FromSlash(r.ProjectSlug()))
}

// resolve makes an image available: archives through the executor (they
// are named by content), registry images through Pull with auth.
func (d *Driver) resolve(ctx context.Context, b Backend, ir imageRef, auth func(string) (string, string, bool)) (sandbox.Image, error) {
	if ir.Kind != pipeline.Registry {
		return b.Resolve(ctx, ir.Raw)
	}
	var creds func(string) (string, string, error)
	if auth != nil {
		creds = func(host string) (string, string, error) {
			u, s, _ := auth(host)
			return u, s, nil
		}
	}
	img, err := b.Pull(ctx, ir.Raw, creds)
	if err != nil {
		return img, err
	}
	img.Ref = ir.Raw
	return img, nil
}

// openBackend takes a run lock for this call and connects; the lock's id
// prefixes every sandbox the call creates, so a later call can reap them
// if this one dies.
func (d *Driver) openBackend(ctx context.Context, log hclog.Logger) (*runlock.Lock, Backend, error) {
	if d.Open == nil {
		return nil, nil, errors.New("no sandbox backend configured")
	}
	lock, err := runlock.Acquire(runner.LocksDir(d.StateDir))
	if err != nil {
		return nil, nil, err
	}
	b, err := d.Open(ctx, lock.ID)
	if err != nil {
		lock.Release()
		return nil, nil, err
	}
	runner.Reap(d.StateDir, log)
	return lock, b, nil
}
