package gitlab

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cleanroom-ci/cleanroom/runner"
	"github.com/cleanroom-ci/cleanroom/runner/pipeline"
	"github.com/cleanroom-ci/cleanroom/runner/services"
	"github.com/cleanroom-ci/cleanroom/sandbox"
)

// A job's services: keyword, mapped onto cleanroom's services (see
// runner/services): each runs in a sandbox of its own beside every user
// stage (before_script and script, after_script), in that stage's
// loopback-only network namespace, reached by alias or 127.0.0.1. A
// custom executor's stages are separate calls, so services start with
// each user stage and stop with it: nothing a service holds survives from
// the script to after_script.

// ServiceRequest is one entry of the job's services: keyword as GitLab
// sends it.
type ServiceRequest struct {
	Name       string     `json:"name"`
	Alias      string     `json:"alias"`
	Entrypoint []string   `json:"entrypoint"`
	Command    []string   `json:"command"`
	Variables  []Variable `json:"variables"`
}

// ServiceState is a service resolved at prepare.
type ServiceState struct {
	Alias      string     `json:"alias"`
	Image      ImageState `json:"image"`
	Entrypoint []string   `json:"entrypoint,omitempty"`
	Command    []string   `json:"command,omitempty"`
	Env        []string   `json:"env,omitempty"`
	// ReadyPort is the service's HEALTHCHECK_TCP_PORT variable, the port
	// GitLab's own executors wait for; 0: not awaited.
	ReadyPort int `json:"readyPort,omitempty"`
}

// serviceReadyTimeout is GitLab's default wait_for_services_timeout.
const serviceReadyTimeout = 30 * time.Second

// parseServices reads the job's services and checks them against the
// policy: an image outside services.allowed is a system failure, as with
// GitLab's executors ("disallowed image"); a bad alias or variable is the
// job's fault.
func parseServices(p *Policy, raw []json.RawMessage) ([]ServiceRequest, []imageRef, error) {
	if len(raw) > 0 && len(p.AllowedServices) == 0 {
		return nil, nil, buildErrorf("services: are not allowed by this runner's policy (services.allowed is empty); remove services: from the job or ask the runner's admin")
	}
	var reqs []ServiceRequest
	var refs []imageRef
	seen := map[string]bool{}
	for i, r := range raw {
		var s ServiceRequest
		if err := json.Unmarshal(r, &s); err != nil {
			return nil, nil, buildErrorf("services[%d]: %v", i, err)
		}
		ref, err := ImageAllowed(p.AllowedServices, s.Name)
		if err != nil {
			return nil, nil, fmt.Errorf("services[%d]: %w (services.allowed)", i, err)
		}
		if s.Alias == "" {
			s.Alias = defaultAlias(s.Name)
		}
		if err := pipeline.CheckAlias(s.Alias); err != nil {
			return nil, nil, buildErrorf("services[%d] (%s): %v; set alias: to one", i, s.Name, err)
		}
		if seen[s.Alias] {
			return nil, nil, buildErrorf("services[%d] (%s): alias %q is used by another service; set alias: to tell them apart", i, s.Name, s.Alias)
		}
		seen[s.Alias] = true
		for _, v := range s.Variables {
			if pipeline.ReservedEnv(v.Key) || !varNameRE.MatchString(v.Key) {
				return nil, nil, buildErrorf("services[%d] (%s): variable %q cannot be set (the proxy variables are the runner's)", i, s.Name, v.Key)
			}
		}
		reqs = append(reqs, s)
		refs = append(refs, ref)
	}
	return reqs, refs, nil
}

// defaultAlias is GitLab's: the image's last path component without tag
// or digest ("registry.example.org/team/postgres:16" → "postgres").
func defaultAlias(name string) string {
	name, _, _ = strings.Cut(name, "@")
	if i := strings.LastIndex(name, "/"); i >= 0 {
		name = name[i+1:]
	}
	name, _, _ = strings.Cut(name, ":")
	return strings.ToLower(strings.ReplaceAll(name, "_", "-"))
}

// serviceState records a resolved service.
func serviceState(s ServiceRequest, img sandbox.Image) ServiceState {
	st := ServiceState{Alias: s.Alias, Image: ImageState{Ref: s.Name, Name: img.Name, Digest: img.Digest}, Entrypoint: s.Entrypoint, Command: s.Command}
	for _, v := range s.Variables {
		st.Env = append(st.Env, v.Key+"="+v.Value)
		if v.Key == "HEALTHCHECK_TCP_PORT" {
			st.ReadyPort, _ = strconv.Atoi(v.Value)
		}
	}
	return st
}

// hasServices: the user stages that run the job's own commands get the
// services; prepare_script (gitlab-runner's shell probe) does not.
func hasServices(stage string, kind Kind) bool {
	return kind == KindUser && stage != StagePrepareScript
}

// stageServices is the stage's runner.ServiceSet (nil: none).
func stageServices(job *jobDir, st *JobState, stage string, kind Kind, p *Policy) *runner.ServiceSet {
	if len(st.Services) == 0 || !hasServices(stage, kind) {
		return nil
	}
	set := &runner.ServiceSet{
		HostsFile: job.file(filepath.Join(servicesDir, stage+".hosts")),
		LogDir:    job.file(filepath.Join(servicesDir, stage)),
		LogName:   "services/" + stage,
	}
	for _, s := range st.Services {
		svc := services.Service{
			Alias: s.Alias,
			Image: sandbox.Image{Ref: s.Image.Ref, Name: s.Image.Name, Digest: s.Image.Digest},
			Env:   s.Env,
			Ready: services.Readiness{Port: s.ReadyPort, Timeout: serviceReadyTimeout},
			// The policy's limits, as for every stage.
			Limits: sandbox.Limits{MemoryBytes: p.MemoryBytes, CPUs: p.CPUs, Pids: p.Pids, TmpBytes: p.TmpBytes},
		}
		if s.Entrypoint != nil {
			svc.Args = append(append([]string{}, s.Entrypoint...), s.Command...)
		} else {
			svc.Command = s.Command
		}
		set.Services = append(set.Services, runner.ServiceSpec{Service: svc})
	}
	return set
}

// resolveServices makes the services' images available (registry images
// with the job's registry credentials, as the job image).
func (d *Driver) resolveServices(ctx context.Context, b Backend, resp *Response, reqs []ServiceRequest, refs []imageRef) ([]ServiceState, error) {
	var out []ServiceState
	for i, s := range reqs {
		img, err := d.resolve(ctx, b, refs[i], resp.RegistryAuth)
		if err != nil {
			return nil, fmt.Errorf("service image %s: %w", s.Name, err)
		}
		out = append(out, serviceState(s, img))
	}
	return out, nil
}
