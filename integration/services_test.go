package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cleanroom-ci/cleanroom/internal/testimage"
)

// servicesEnv is a workspace whose pipeline can name REDIS: the Redis test
// image (Debian's redis-server and redis-cli), used both as the service
// and as the step's image (for the client).
func servicesEnv(t *testing.T) (*env, string) {
	e := newEnv(t)
	return e, "oci-archive:" + testimage.Redis(t)
}

const redisService = `    services:
      - image: REDIS
        alias: cache
        command: [redis-server, --save, "", --appendonly, "no", --dir, /tmp, --bind, 127.0.0.1]
        ready: {port: 6379, timeout: 30s}
`

func (e *env) servicesPipeline(redis, yaml string) string {
	return e.pipeline(strings.ReplaceAll(yaml, "REDIS", redis))
}

// A step talks to a real Redis running beside it, by alias and by
// 127.0.0.1, through SET and GET; the service's log lands under the
// outputs, its image is in the provenance with its alias and verify shows
// it; nothing is left behind.
func TestServiceRedisQueriedByAlias(t *testing.T) {
	e, redis := servicesEnv(t)
	e.servicesPipeline(redis, `version: 1
image: REDIS
steps:
  - name: query
    run: |
      grep cache /etc/hosts
      echo "no_proxy=$NO_PROXY"
      redis-cli -h cache PING
      redis-cli -h cache SET greeting "hello from the step"
      test "$(redis-cli -h 127.0.0.1 -p 6379 GET greeting)" = "hello from the step"
      echo got it
      mkdir -p out && echo ok > out/ok
    timeout: 2m
`+redisService+`  - name: without
    run: |
      if redis-cli -h 127.0.0.1 PING; then echo "the service outlived its step"; exit 1; fi
    services: []
artifacts: [out/ok]
`)
	r := e.run(nil, "run", "--output", "json")
	if r.code != 0 {
		t.Fatalf("want exit 0:\n%s", r)
	}
	for _, want := range []string{"[query] PONG", "[query] OK", "[query] got it", "no_proxy=localhost,127.0.0.1,::1,cache"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("output lacks %q:\n%s", want, r)
		}
	}
	var res struct {
		Steps []struct {
			Name     string `json:"name"`
			Services []struct {
				Alias, Status, Log, Digest string
			} `json:"services"`
		} `json:"steps"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Steps) != 2 || len(res.Steps[0].Services) != 1 || len(res.Steps[1].Services) != 0 {
		t.Fatalf("summary services: %+v", res.Steps)
	}
	svc := res.Steps[0].Services[0]
	if svc.Alias != "cache" || svc.Status != "stopped" || svc.Log != "logs/services/query/cache.log" {
		t.Errorf("service result %+v", svc)
	}
	log, err := os.ReadFile(filepath.Join(e.dir, ".cleanroom", svc.Log))
	if err != nil || !strings.Contains(string(log), "Ready to accept connections") {
		t.Errorf("service log (%v):\n%s", err, log)
	}
	if _, err := os.Stat(filepath.Join(e.dir, ".cleanroom", "private")); err == nil {
		t.Error("the hosts files were published with the outputs")
	}

	// Provenance: the service image by digest with its alias and step.
	st, err := os.ReadFile(filepath.Join(e.dir, ".cleanroom", "provenance.intoto.json"))
	if err != nil {
		t.Fatal(err)
	}
	var prov struct {
		Predicate struct {
			BuildDefinition struct {
				ResolvedDependencies []struct {
					Name        string            `json:"name"`
					Digest      map[string]string `json:"digest"`
					Annotations map[string]any    `json:"annotations"`
				} `json:"resolvedDependencies"`
			} `json:"buildDefinition"`
		} `json:"predicate"`
	}
	if err := json.Unmarshal(st, &prov); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, rd := range prov.Predicate.BuildDefinition.ResolvedDependencies {
		if rd.Annotations["kind"] != "image" {
			continue
		}
		b, _ := json.Marshal(rd.Annotations["services"])
		if string(b) == `[{"alias":"cache","step":"query"}]` && rd.Digest["sha256"] == strings.TrimPrefix(svc.Digest, "sha256:") {
			found = true
		}
	}
	if !found {
		t.Errorf("no image dependency with the service's digest and alias:\n%s", st)
	}
	v := e.run(nil, "verify", "--provenance", ".cleanroom/provenance.intoto.json", "out/ok")
	if v.code != 0 || !strings.Contains(v.stdout, "services:      1") || !strings.Contains(v.stdout, "cache (step query): "+redis) {
		t.Errorf("verify does not show the service:\n%s", v)
	}
	// A later run's outputs hold no service log of this one.
	e.pipeline("version: 1\nimage: IMAGE\nsteps: [{name: plain, run: \"true\"}]\n")
	if r := e.run(nil, "run"); r.code != 0 {
		t.Fatalf("%s", r)
	}
	if _, err := os.Stat(filepath.Join(e.dir, ".cleanroom", "logs", "services")); err == nil {
		t.Error("an earlier run's service logs stayed in the outputs")
	}
	requireNoResidue(t)
}

// A service that never opens its port fails the run with exit 2, names
// the service and shows its log; nothing is left behind.
func TestServiceNeverReadyFailsWithItsLog(t *testing.T) {
	e, redis := servicesEnv(t)
	e.servicesPipeline(redis, `version: 1
image: REDIS
steps:
  - name: query
    run: touch step-ran
    services:
      - image: REDIS
        alias: broken
        entrypoint: [/bin/sh, -c, "echo starting the broken service; echo it will never listen >&2; sleep 600"]
        ready: {port: 6379, timeout: 3s}
`)
	r := e.run(nil, "run")
	if r.code != 2 {
		t.Fatalf("want exit 2:\n%s", r)
	}
	for _, want := range []string{`service "broken" is not ready`, "not ready within 3s", "127.0.0.1:6379 does not accept connections", "logs/services/query/broken.log", "starting the broken service", "it will never listen"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r)
		}
	}
	if _, err := os.Stat(filepath.Join(e.dir, "step-ran")); err == nil {
		t.Error("the step ran although its service was not ready")
	}
	requireNoResidue(t)
}

// A service that exits before it is ready fails at once (not after the
// timeout), and a readiness command runs in the step's network.
func TestServiceExitsAndReadyCommand(t *testing.T) {
	e, redis := servicesEnv(t)
	e.servicesPipeline(redis, `version: 1
image: REDIS
steps:
  - name: crash
    run: "true"
    services:
      - image: REDIS
        alias: crashy
        entrypoint: [/bin/sh, -c, "echo cannot start; exit 3"]
        ready: {port: 6379, timeout: 60s}
`)
	start := time.Now()
	r := e.run(nil, "run")
	if r.code != 2 || !strings.Contains(r.stderr, "it exited (exit status 3)") || !strings.Contains(r.stderr, "cannot start") {
		t.Fatalf("want exit 2 naming the exit:\n%s", r)
	}
	if d := time.Since(start); d > 40*time.Second {
		t.Errorf("took %v: the exit was not noticed before the timeout", d)
	}
	requireNoResidue(t)

	e.servicesPipeline(redis, `version: 1
image: REDIS
steps:
  - name: cmd
    run: redis-cli -h db PING
    services:
      - image: REDIS
        alias: db
        command: [redis-server, --save, "", --appendonly, "no", --dir, /tmp]
        ready: {command: [redis-cli, -h, db, PING], timeout: 60s}
`)
	if r := e.run(nil, "run"); r.code != 0 || !strings.Contains(r.stderr, "[cmd] PONG") {
		t.Fatalf("readiness by command:\n%s", r)
	}
	// A service that ends during its step is reported; the step's own
	// result decides the run.
	e.servicesPipeline(redis, strings.Replace(readFile(t, filepath.Join(e.dir, "cleanroom.yaml")), "run: redis-cli -h db PING", "run: redis-cli -h db SHUTDOWN NOSAVE; sleep 1", 1))
	r = e.run(nil, "run", "--output", "json")
	if r.code != 0 || !strings.Contains(r.stdout, `"status": "exited"`) || !strings.Contains(r.stderr, "service ended before the step") {
		t.Fatalf("a service shut down by its step:\n%s", r)
	}
	log, _ := os.ReadFile(filepath.Join(e.dir, ".cleanroom", "logs", "services", "cmd", "db.log"))
	if !strings.Contains(string(log), "[ready: redis-cli -h db PING] PONG") {
		t.Errorf("the readiness probe's output is not in the service log:\n%s", log)
	}
	requireNoResidue(t)
}

// SIGTERM to the runner mid-step and a step timeout both remove the
// service with the step.
func TestServiceRemovedOnCancelAndTimeout(t *testing.T) {
	e, redis := servicesEnv(t)
	e.servicesPipeline(redis, `version: 1
image: REDIS
steps:
  - name: long
    run: redis-cli -h cache PING; echo started; sleep 600
    timeout: 3s
`+redisService)
	r := e.run(nil, "run", "--output", "json")
	if r.code != 1 || parseSummary(t, r).status("long") != "timeout" {
		t.Fatalf("want a timeout, exit 1:\n%s", r)
	}
	requireNoResidue(t)

	e.servicesPipeline(redis, `version: 1
image: REDIS
steps:
  - name: long
    run: redis-cli -h cache PING; echo started; sleep 600
`+redisService)
	cmd := e.command(nil, "run")
	var errb lockedBuffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 90*time.Second, func() bool { return strings.Contains(errb.String(), "[long] started") })
	if !serviceRunning(t) {
		t.Fatal("no service container while the step runs (the test would prove nothing)")
	}
	cmd.Process.Signal(syscall.SIGTERM)
	err := cmd.Wait()
	if ee, ok := err.(interface{ ExitCode() int }); !ok || ee.ExitCode() != 2 {
		t.Fatalf("exit: %v\n%s", err, errb.String())
	}
	requireNoResidue(t)
}

// SIGTERM while the runner waits for a service to become ready stops the
// wait at once, removes the service and exits 2.
func TestServiceCancelWhileAwaited(t *testing.T) {
	e, redis := servicesEnv(t)
	e.servicesPipeline(redis, `version: 1
image: REDIS
steps:
  - name: wait
    run: touch step-ran
    services:
      - image: REDIS
        alias: cache
        entrypoint: [/bin/sh, -c, "echo waiting forever; sleep 600"]
        ready: {port: 6379, timeout: 10m}
`)
	cmd := e.command(nil, "run")
	var errb lockedBuffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 90*time.Second, func() bool { return strings.Contains(errb.String(), "service starting") && serviceRunning(t) })
	start := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	err := cmd.Wait()
	if ee, ok := err.(interface{ ExitCode() int }); !ok || ee.ExitCode() != 2 {
		t.Fatalf("exit: %v\n%s", err, errb.String())
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("took %v to stop", d)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "step-ran")); err == nil {
		t.Error("the step ran after the cancel")
	}
	requireNoResidue(t)
}

// A runner killed with SIGKILL leaves its service running; the next run
// reaps it (the service carries the run's labels).
func TestServiceReapedAfterSIGKILL(t *testing.T) {
	e, redis := servicesEnv(t)
	e.servicesPipeline(redis, `version: 1
image: REDIS
steps:
  - name: long
    run: redis-cli -h cache PING; echo started; sleep 600
`+redisService)
	cmd := e.command(nil, "run")
	var errb lockedBuffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 90*time.Second, func() bool { return strings.Contains(errb.String(), "[long] started") })
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	cmd.Wait()
	if !serviceRunning(t) {
		t.Fatalf("expected the service container to survive the SIGKILL (the test would prove nothing):\n%v", residue(t))
	}
	e.pipeline(`version: 1
image: IMAGE
steps:
  - name: quick
    run: "true"
`)
	if r := e.run(nil, "run"); r.code != 0 {
		t.Fatalf("%s", r)
	}
	requireNoResidue(t)
}

// serviceRunning reports whether a service container exists in the test
// namespace.
func serviceRunning(t *testing.T) bool {
	out, err := exec.Command("ctr", "--address", address, "-n", namespace, "containers", "ls", "-q").Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.Contains(string(out), "-svc-cache")
}

// A service has no egress unless it lists rules; with rules it gets a
// proxy of its own, and its fetches are recorded as "<step>/<alias>".
func TestServiceEgressOwnAllowlist(t *testing.T) {
	e := newEnv(t)
	body := "served by the service after fetching it\n"
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, body) })
	e.pipeline(fmt.Sprintf(`version: 1
image: IMAGE
steps:
  - name: use
    run: |
      printf 'GET /dep.txt HTTP/1.0\r\n\r\n' | nc web 8080
      if printf 'GET /dep.txt HTTP/1.0\r\n\r\n' | nc offline 8081 | grep -q fetched; then echo "the service without egress fetched"; exit 1; fi
    services:
      - image: IMAGE
        alias: web
        entrypoint: [/bin/sh, -c, "mkdir -p /tmp/www && wget -q -O /tmp/www/dep.txt http://%[1]s/dep.txt && exec httpd -f -p 127.0.0.1:8080 -h /tmp/www"]
        ready: {port: 8080, timeout: 30s}
        egress: {allow: ["%[1]s"]}
      - image: IMAGE
        alias: offline
        entrypoint: [/bin/sh, -c, "mkdir -p /tmp/www; env | grep -i _proxy= && echo has-proxy; wget -q -T 2 -O /tmp/www/dep.txt http://%[1]s/dep.txt && echo fetched > /tmp/www/dep.txt; exec httpd -f -p 127.0.0.1:8081 -h /tmp/www"]
        ready: {port: 8081, timeout: 30s}
`, up.hostPort()))
	r := e.run(nil, "run")
	if r.code != 0 || !strings.Contains(r.stderr, "[use] "+strings.TrimSpace(body)) {
		t.Fatalf("want the body through the service:\n%s", r)
	}
	var recorded bool
	for _, ev := range e.events() {
		if ev.Step == "use/web" && ev.Decision == "allow" && strings.HasSuffix(ev.URL, "/dep.txt") && ev.Status == 200 {
			recorded = true
		}
		if ev.Step == "use/offline" {
			t.Errorf("the service without egress has a proxy: %+v", ev)
		}
	}
	if !recorded {
		t.Errorf("the service's fetch is not recorded as use/web: %+v", e.events())
	}
	var prov struct {
		Predicate struct {
			BuildDefinition struct {
				InternalParameters struct {
					Egress  map[string][]string `json:"egress"`
					Sandbox struct {
						Limits map[string]map[string]float64 `json:"limits"`
					} `json:"sandbox"`
				} `json:"internalParameters"`
			} `json:"buildDefinition"`
		} `json:"predicate"`
	}
	b, _ := os.ReadFile(filepath.Join(e.dir, ".cleanroom", "provenance.intoto.json"))
	if err := json.Unmarshal(b, &prov); err != nil {
		t.Fatal(err)
	}
	ip := prov.Predicate.BuildDefinition.InternalParameters
	if got := ip.Egress["use/web"]; len(got) != 1 || got[0] != up.hostPort() {
		t.Errorf("provenance egress of the service: %v", ip.Egress)
	}
	if _, ok := ip.Egress["use/offline"]; ok {
		t.Errorf("a service without egress has an allowlist in the provenance: %v", ip.Egress)
	}
	if l := ip.Sandbox.Limits["use/offline"]; l["memoryBytes"] != 1<<30 || l["pids"] != 512 {
		t.Errorf("service limits in the provenance: %v", ip.Sandbox.Limits)
	}
	log, _ := os.ReadFile(filepath.Join(e.dir, ".cleanroom", "logs", "services", "use", "offline.log"))
	if strings.Contains(string(log), "has-proxy") {
		t.Errorf("the service without egress got proxy variables:\n%s", log)
	}
	requireNoResidue(t)
}

// A service without entrypoint or command runs the image's own cmd, and
// the volume the image declares is a writable tmpfs (the root stays
// read-only): Redis saves its dump there.
func TestServiceImageCmdAndVolume(t *testing.T) {
	e, redis := servicesEnv(t)
	e.servicesPipeline(redis, `version: 1
image: REDIS
steps:
  - name: save
    run: |
      redis-cli -h store CONFIG GET dir
      redis-cli -h store SAVE
    services:
      - image: REDIS
        alias: store
        ready: {port: 6379}
`)
	r := e.run(nil, "run")
	if r.code != 0 || !strings.Contains(r.stderr, "[save] /data") || !strings.Contains(r.stderr, "[save] OK") {
		t.Fatalf("want the image's cmd and a writable /data:\n%s", r)
	}
	requireNoResidue(t)
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A service runs with the step's hardening: the same capabilities,
// no_new_privs, seccomp, a read-only root, and no workspace.
func TestServiceSandboxIsHardened(t *testing.T) {
	e := newEnv(t)
	// The image has an empty /workspace directory; the step's workspace
	// holds cleanroom.yaml.
	probe := `grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status; echo "uidmap:$(cat /proc/self/uid_map | tr -s ' ')"; readlink /proc/self/ns/net; readlink /proc/self/ns/user; touch /planted 2>/dev/null && echo root-writable; test -e /workspace/cleanroom.yaml && echo sees-workspace; echo probe-done`
	e.pipeline(`version: 1
image: IMAGE
steps:
  - name: check
    run: |
      test -e /workspace/cleanroom.yaml
      ` + probe + `
    services:
      - image: IMAGE
        alias: probe
        entrypoint:
          - /bin/sh
          - -c
          - |
            ` + probe + `
            exec httpd -f -p 127.0.0.1:9000
        ready: {port: 9000}
`)
	r := e.run(nil, "run")
	if r.code != 0 {
		t.Fatalf("%s", r)
	}
	log := readFile(t, filepath.Join(e.dir, ".cleanroom", "logs", "services", "check", "probe.log"))
	if !strings.Contains(log, "probe-done") {
		t.Fatalf("the service's probe did not run:\n%s", log)
	}
	for _, bad := range []string{"root-writable", "sees-workspace"} {
		if strings.Contains(log, bad) {
			t.Errorf("service: %s\n%s", bad, log)
		}
	}
	// The same network namespace (a pod's), and the step's user namespace
	// and id mapping when steps run in one.
	for _, field := range []string{"CapEff", "CapBnd", "NoNewPrivs", "Seccomp", "uidmap", "net", "user"} {
		svc := lineWith(log, field+":")
		step := lineWith(r.stderr, "[check] "+field+":")
		if svc == "" || !strings.HasSuffix(step, svc) {
			t.Errorf("%s: service %q, step %q", field, svc, step)
		}
	}
	if lineWith(log, "NoNewPrivs:") != "NoNewPrivs:\t1" || lineWith(log, "Seccomp:") != "Seccomp:\t2" {
		t.Errorf("service not hardened:\n%s", log)
	}
	requireNoResidue(t)
}

func lineWith(s, prefix string) string {
	for _, l := range strings.Split(s, "\n") {
		if i := strings.Index(l, prefix); i >= 0 {
			return strings.TrimSpace(l[i:])
		}
	}
	return ""
}
