package pipeline

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

const servicesExample = `version: 1
image: oci-archive:./builder.tar
services:
  - image: oci-archive:./redis.tar
    alias: redis
    command: [redis-server, --save, ""]
    ready: {port: 6379, timeout: 10s}
steps:
  - name: test
    run: redis-cli -h redis ping
  - name: pg
    run: psql -h db
    services:
      - image: registry.example.org/postgres:16
        alias: db
        entrypoint: [docker-entrypoint.sh]
        command: []
        env: {POSTGRES_PASSWORD: pw}
        ready: {command: [pg_isready, -h, 127.0.0.1]}
        resources: {memory: 256MiB, cpus: 0.5, pids: 64}
        egress: {allow: [files.example.org]}
  - name: lint
    run: "true"
    services: []
`

func TestParseServices(t *testing.T) {
	p := mustParse(t, servicesExample)
	redis := Service{
		Image: "oci-archive:./redis.tar", Alias: "redis", Command: []string{"redis-server", "--save", ""},
		Ready:     Readiness{Port: 6379, Timeout: 10 * time.Second},
		Resources: Resources{MemoryBytes: DefaultServiceMemoryBytes, CPUs: DefaultServiceCPUs, Pids: DefaultServicePids},
		Line:      4,
	}
	if got := p.StepServices(p.Steps[0]); !reflect.DeepEqual(got, []Service{redis}) {
		t.Errorf("step test inherits:\n got %+v\nwant %+v", got, []Service{redis})
	}
	db := Service{
		Image: "registry.example.org/postgres:16", Alias: "db",
		Entrypoint: []string{"docker-entrypoint.sh"}, Command: []string{},
		Env:       map[string]string{"POSTGRES_PASSWORD": "pw"},
		Ready:     Readiness{Command: []string{"pg_isready", "-h", "127.0.0.1"}, Timeout: DefaultReadyTimeout},
		Resources: Resources{MemoryBytes: 256 << 20, CPUs: 0.5, Pids: 64},
		Allow:     []string{"files.example.org"},
		Line:      14,
	}
	if got := p.StepServices(p.Steps[1]); !reflect.DeepEqual(got, []Service{db}) {
		t.Errorf("step pg replaces:\n got %+v\nwant %+v", got, []Service{db})
	}
	if got := p.StepServices(p.Steps[2]); len(got) != 0 {
		t.Errorf("services: [] must mean none, got %+v", got)
	}
	if ref := p.ServiceImageRef(redis); ref.Kind != OCIArchive || ref.Ref != "redis.tar" {
		t.Errorf("archive not resolved against the pipeline dir: %+v", ref)
	}
}

func TestParseServicesErrors(t *testing.T) {
	base := "version: 1\nimage: oci-archive:./b.tar\nsteps: [{name: s, run: x}]\n"
	tests := []struct{ yaml, want string }{
		{base + "services: [{alias: db}]\n", "cleanroom.yaml:4:12: services[0].image: missing"},
		{base + "services: [{image: oci-archive:./r.tar}]\n", "services[0].alias: missing"},
		{base + "services: [{image: oci-archive:./r.tar, alias: Bad_Name}]\n", `invalid alias "Bad_Name"`},
		{base + "services: [{image: oci-archive:./r.tar, alias: localhost}]\n", "localhost is the step's own name"},
		{base + "services: [{image: oci-archive:./r.tar, alias: a--b}]\n", `invalid alias "a--b"`},
		{base + "services: [{image: oci-archive:./r.tar, alias: a.-b}]\n", `invalid alias "a.-b"`},
		{base + "services: [{image: oci-archive:./r.tar, alias: " + strings.Repeat("a", 64) + "}]\n", "invalid alias"},
		{base + "services: [{image: oci-archive:./r.tar, alias: a}, {image: oci-archive:./r.tar, alias: a}]\n", `services[1].alias: duplicate alias "a"`},
		{base + "services: [{image: 'bad ref!', alias: a}]\n", "services[0].image"},
		{base + "services: [{image: oci-archive:./r.tar, alias: a, ready: {port: 70000}}]\n", "services[0].ready.port: must be a TCP port"},
		{base + "services: [{image: oci-archive:./r.tar, alias: a, ready: {port: \"80\"}}]\n", "services[0].ready.port"},
		{base + "services: [{image: oci-archive:./r.tar, alias: a, ready: {tcp: 80}}]\n", "services[0].ready.tcp: unknown field"},
		{base + "services: [{image: oci-archive:./r.tar, alias: a, ready: {timeout: 5}}]\n", "services[0].ready.timeout: invalid duration"},
		{base + "services: [{image: oci-archive:./r.tar, alias: a, entrypoint: []}]\n", "services[0].entrypoint: empty"},
		{base + "services: [{image: oci-archive:./r.tar, alias: a, command: redis-server}]\n", "services[0].command: expected a list of strings"},
		{base + "services: [{image: oci-archive:./r.tar, alias: a, command: [1]}]\n", "services[0].command[0]"},
		{base + "services: [{image: oci-archive:./r.tar, alias: a, env: {HTTP_PROXY: x}}]\n", "services[0].env.HTTP_PROXY: HTTP_PROXY is reserved"},
		{base + "services: [{image: oci-archive:./r.tar, alias: a, egress: {mode: audit}}]\n", "services[0].egress.mode: unknown field"},
		{base + "services: [{image: oci-archive:./r.tar, alias: a, resources: {memory: lots}}]\n", "services[0].resources.memory"},
		{base + "services: [{image: oci-archive:./r.tar, alias: a, aliases: [b]}]\n", `services[0].aliases: unknown field (did you mean "alias"?)`},
		{"version: 1\nimage: oci-archive:./b.tar\nsteps: [{name: s, run: x, services: {a: b}}]\n", "steps[0].services: expected a list of services"},
	}
	for _, tt := range tests {
		_, err := Parse("cleanroom.yaml", []byte(tt.yaml))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q:\n got %v\nwant an error containing %q", tt.yaml, err, tt.want)
		}
	}
}

func TestLintServices(t *testing.T) {
	p := mustParse(t, lintBase+`    services:
      - image: registry.example.org/redis:7
        alias: redis
        env: {API_TOKEN: abc123}
        egress: {allow: ["*.com"]}
`)
	want := map[string]string{
		"CR001": "steps[0].services[0].image",
		"CR006": "steps[0].services[0].env.API_TOKEN",
		"CR002": "steps[0].services[0].egress.allow[0]",
		"CR013": "steps[0].services[0]",
	}
	got := map[string]string{}
	for _, f := range Lint(p, LintOptions{}) {
		got[f.ID] = f.Field
		if f.ID == "CR013" && (f.Line != 8 || f.Column != 9) {
			t.Errorf("CR013 at %d:%d, want the service's mapping at 8:9", f.Line, f.Column)
		}
	}
	for id, field := range want {
		if got[id] != field {
			t.Errorf("%s: got field %q, want %q (all: %v)", id, got[id], field, got)
		}
	}
	ready := mustParse(t, strings.Replace(lintBase, "    timeout: 5m\n", "    timeout: 5m\n    services: [{image: oci-archive:./r.tar, alias: r, ready: {port: 1}}]\n", 1))
	if f := Lint(ready, LintOptions{}); len(f) != 0 {
		t.Errorf("an awaited archive service gives findings: %v", f)
	}
}

// The services example stays valid and lint-clean.
func TestServicesExample(t *testing.T) {
	p, err := Load("../../examples/services/cleanroom.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if svcs := p.StepServices(p.Steps[0]); len(svcs) != 1 || svcs[0].Alias != "cache" || svcs[0].Ready.Port != 6379 {
		t.Errorf("services %+v", svcs)
	}
	if f := Lint(p, LintOptions{}); len(f) != 0 {
		t.Errorf("findings: %v", f)
	}
}
