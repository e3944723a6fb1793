package gitlab

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// A job's services: are checked against services.allowed, resolved at
// prepare and given to the user stages that run the job's commands (not
// to the helper stages, nor to prepare_script), with GitLab's default
// alias, entrypoint and command, variables and HEALTHCHECK_TCP_PORT.
func TestServicesMappedOntoStages(t *testing.T) {
	h := newHarness(t)
	h.d.Policy.AllowedServices = []string{"registry.example.org/db/**", "registry.example.org/cache/*"}
	h.resp["services"] = []any{
		map[string]any{"name": "registry.example.org/db/postgres:16", "command": []string{"postgres", "-c", "fsync=off"},
			"variables": []map[string]any{{"key": "POSTGRES_PASSWORD", "value": "pw"}, {"key": "HEALTHCHECK_TCP_PORT", "value": "5432"}}},
		map[string]any{"name": "registry.example.org/cache/redis:7", "alias": "cache", "entrypoint": []string{"redis-server"}},
	}
	h.writeResponse()
	if err := h.d.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := h.state()
	if len(st.Services) != 2 || st.Services[0].Alias != "postgres" || st.Services[1].Alias != "cache" || st.Services[0].Image.Digest == "" {
		t.Fatalf("services in the job state: %+v", st.Services)
	}
	if !strings.Contains(h.out.String(), "cleanroom: service registry.example.org/db/postgres:16 (sha256:") {
		t.Errorf("the job log does not name the service:\n%s", h.out.String())
	}
	for _, stage := range []string{"step_script", "after_script", "get_sources", "prepare_script"} {
		if err := h.run(stage); err != nil {
			t.Fatalf("%s: %v", stage, err)
		}
	}
	byStage := map[string]stageRun{}
	for _, r := range h.runs {
		byStage[r.step.Name] = r
	}
	set := byStage["step_script"].step.Services
	if set == nil || len(set.Services) != 2 {
		t.Fatalf("step_script services: %+v", set)
	}
	pg, cache := set.Services[0], set.Services[1]
	if pg.Alias != "postgres" || pg.Ready.Port != 5432 || pg.Args != nil || !reflect.DeepEqual(pg.Command, []string{"postgres", "-c", "fsync=off"}) ||
		!reflect.DeepEqual(pg.Env, []string{"POSTGRES_PASSWORD=pw", "HEALTHCHECK_TCP_PORT=5432"}) {
		t.Errorf("postgres: %+v", pg)
	}
	if cache.Alias != "cache" || !reflect.DeepEqual(cache.Args, []string{"redis-server"}) || cache.Ready.Port != 0 || cache.Limits.MemoryBytes != h.d.Policy.MemoryBytes {
		t.Errorf("cache: %+v", cache)
	}
	if byStage["after_script"].step.Services == nil {
		t.Error("after_script has no services")
	}
	for _, stage := range []string{"get_sources", "prepare_script"} {
		if byStage[stage].step.Services != nil {
			t.Errorf("%s got services", stage)
		}
	}
}

func TestServicesRefused(t *testing.T) {
	for _, tc := range []struct {
		name  string
		svc   map[string]any
		want  string
		build bool
	}{
		{"image outside services.allowed", map[string]any{"name": "registry.example.org/other/x:1"}, "services.allowed", false},
		{"bad alias", map[string]any{"name": "registry.example.org/db/pg:1", "alias": "Bad_Alias"}, "invalid alias", true},
		{"proxy variable", map[string]any{"name": "registry.example.org/db/pg:1", "variables": []map[string]any{{"key": "HTTPS_PROXY", "value": "x"}}}, "HTTPS_PROXY", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.d.Policy.AllowedServices = []string{"registry.example.org/db/**"}
			h.resp["services"] = []any{tc.svc}
			h.writeResponse()
			err := h.d.Prepare(context.Background())
			var be *BuildError
			if err == nil || !strings.Contains(err.Error(), tc.want) || errors.As(err, &be) != tc.build {
				t.Fatalf("got %v (build failure %v), want %q (build failure %v)", err, errors.As(err, &be), tc.want, tc.build)
			}
		})
	}
}
