package pipeline

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/goccy/go-yaml/ast"
)

// Services are containers that run beside a step in its network namespace,
// as the containers of a Kubernetes pod do: a database, a cache or a mock
// server the build talks to at 127.0.0.1:PORT or by alias.
//
//	services:
//	  - image: oci-archive:./images/redis.tar   # same forms and lint as step images
//	    alias: redis                            # host name in the step's /etc/hosts
//	    entrypoint: [redis-server]              # optional; replaces the image's
//	    command: [--save, ""]                   # optional; replaces the image's cmd
//	    env: {REDIS_ARGS: ""}
//	    ready: {port: 6379, timeout: 30s}       # and/or command: [redis-cli, ping]
//	    resources: {memory: 256MiB, cpus: 0.5, pids: 128}
//	    egress: {allow: []}                     # default: no egress of its own

// Service defaults: a service is a helper, so it gets less than a step.
const (
	DefaultServiceMemoryBytes = 1 << 30 // 1 GiB
	DefaultServiceCPUs        = 1.0
	DefaultServicePids        = 512
	DefaultReadyTimeout       = 60 * time.Second
)

// Service is one service container.
type Service struct {
	// Image is the reference as written (see ParseImageRef).
	Image string
	// Alias is the service's host name inside the step; unique among the
	// step's services.
	Alias string
	// Entrypoint and Command replace the image's entrypoint and cmd
	// (nil keeps the image's; Docker's rules: an entrypoint also drops
	// the image's cmd).
	Entrypoint []string
	Command    []string
	Env        map[string]string
	Ready      Readiness
	// Resources are always positive after Parse.
	Resources Resources
	// Allow is the service's own egress allowlist; empty means none.
	Allow []string
	// Line is where the service is written, for messages.
	Line int
}

// Readiness is how the runner knows a service can take requests: a TCP
// port that accepts connections on 127.0.0.1, a command that exits 0 (run
// in a fresh sandbox of the service's image, in the step's network), or
// both. Neither means "started".
type Readiness struct {
	Port    int
	Command []string
	// Timeout bounds the wait (default DefaultReadyTimeout).
	Timeout time.Duration
}

var (
	serviceFields = []string{"image", "alias", "entrypoint", "command", "env", "ready", "resources", "egress"}
	readyFields   = []string{"port", "command", "timeout"}
)

// aliasRE: an alias is a host name (letters and digits, single '-' or
// '.' between them), and a part of container ids, which allow no repeated
// separators.
var aliasRE = regexp.MustCompile(`^[a-z0-9]+([.-][a-z0-9]+)*$`)

// CheckAlias reports whether a is a valid service alias (the GitLab
// driver checks its jobs' aliases with it).
func CheckAlias(a string) error {
	if len(a) > 63 || !aliasRE.MatchString(a) {
		return fmt.Errorf("invalid alias %q: use a host name of 1 to 63 lower-case letters and digits, with single '-' or '.' between them, e.g. redis or db.local", a)
	}
	if a == "localhost" || strings.HasSuffix(a, ".localhost") {
		return errors.New("localhost is the step's own name; choose another alias")
	}
	return nil
}

func (d *decoder) services(n ast.Node, field string) []Service {
	items, _, ok := d.sequence(n, field, "a list of services, e.g. [{image: …, alias: db, ready: {port: 5432}}]")
	if !ok {
		return nil
	}
	out := make([]Service, 0, len(items))
	first := map[string]string{}
	for i, item := range items {
		f := index(field, i)
		s, aliasNode, ok := d.service(item, f)
		if !ok {
			continue
		}
		if aliasNode != nil {
			if prev, dup := first[s.Alias]; dup {
				d.errorf(aliasNode, join(f, "alias"), "duplicate alias %q; %s already uses it", s.Alias, prev)
			} else {
				first[s.Alias] = f
			}
		}
		out = append(out, s)
	}
	return out
}

func (d *decoder) service(n ast.Node, field string) (Service, ast.Node, bool) {
	m, node := d.object(n, field, "a mapping with at least image and alias", serviceFields)
	if node == nil {
		return Service{}, nil, false
	}
	line, _ := position(node)
	s := Service{Line: line}
	var aliasNode ast.Node
	if e, ok := m["image"]; ok {
		s.Image = d.image(e.value, join(field, "image"))
	} else {
		d.errorf(node, join(field, "image"), "missing; every service needs an image (same forms as a step's)")
	}
	if e, ok := m["alias"]; ok {
		f := join(field, "alias")
		if a, an, ok := d.str(e.value, f); ok {
			if err := CheckAlias(a); err != nil {
				d.errorf(an, f, "%v", err)
			} else {
				s.Alias, aliasNode = a, an
			}
		}
	} else {
		d.errorf(node, join(field, "alias"), "missing; give the host name the step reaches the service by, e.g. alias: db")
	}
	if e, ok := m["entrypoint"]; ok {
		s.Entrypoint = d.argv(e.value, join(field, "entrypoint"), true)
	}
	if e, ok := m["command"]; ok {
		s.Command = d.argv(e.value, join(field, "command"), false)
	}
	if e, ok := m["env"]; ok {
		s.Env = d.env(e.value, join(field, "env"))
	}
	if e, ok := m["ready"]; ok {
		s.Ready = d.ready(e.value, join(field, "ready"))
	}
	if e, ok := m["resources"]; ok {
		s.Resources = d.resources(e.value, join(field, "resources"))
	}
	if e, ok := m["egress"]; ok {
		f := join(field, "egress")
		em, _ := d.object(e.value, f, "a mapping with allow (a service has no egress unless it lists rules)", []string{"allow"})
		if a, ok := em["allow"]; ok {
			s.Allow, _ = d.allowList(a.value, join(f, "allow"))
		}
	}
	return s, aliasNode, true
}

// argv reads a list of strings passed as is (no shell). An entrypoint
// must not be empty; an empty command clears the image's cmd.
func (d *decoder) argv(n ast.Node, field string, nonEmpty bool) []string {
	items, seq, ok := d.sequence(n, field, `a list of strings, e.g. ["redis-server", "--save", ""]`)
	if !ok {
		return nil
	}
	if nonEmpty && len(items) == 0 {
		d.errorf(seq, field, "empty; leave it out to keep the image's entrypoint")
		return nil
	}
	out := make([]string, 0, len(items))
	for i, item := range items {
		f := index(field, i)
		v, vn, ok := d.str(item, f)
		if !ok {
			continue
		}
		if strings.IndexByte(v, 0) >= 0 {
			d.errorf(vn, f, "contains a NUL byte, which cannot be passed to a program")
			continue
		}
		out = append(out, v)
	}
	return out
}

func (d *decoder) ready(n ast.Node, field string) Readiness {
	var r Readiness
	m, _ := d.object(n, field, "a mapping with port and/or command, and timeout", readyFields)
	if e, ok := m["port"]; ok {
		f := join(field, "port")
		if v, vn, ok := d.integer(e.value, f); ok {
			if v < 1 || v > 65535 {
				d.errorf(vn, f, "must be a TCP port from 1 to 65535; got %d", v)
			} else {
				r.Port = int(v)
			}
		}
	}
	if e, ok := m["command"]; ok {
		r.Command = d.argv(e.value, join(field, "command"), true)
	}
	if e, ok := m["timeout"]; ok {
		r.Timeout = d.duration(e.value, join(field, "timeout"))
	}
	return r
}

func serviceDefaults(svcs []Service) {
	for i := range svcs {
		s := &svcs[i]
		if s.Ready.Timeout == 0 {
			s.Ready.Timeout = DefaultReadyTimeout
		}
		if s.Resources.MemoryBytes == 0 {
			s.Resources.MemoryBytes = DefaultServiceMemoryBytes
		}
		if s.Resources.CPUs == 0 {
			s.Resources.CPUs = DefaultServiceCPUs
		}
		if s.Resources.Pids == 0 {
			s.Resources.Pids = DefaultServicePids
		}
	}
}

// StepServices returns the services that run beside the step: its own
// when it lists services (an empty list: none), else the pipeline's.
func (p *Pipeline) StepServices(s Step) []Service {
	if s.ServicesSet {
		return s.Services
	}
	return p.Services
}

// ServiceImageRef returns the parsed image reference of a service, with a
// relative archive path resolved against the pipeline's directory.
func (p *Pipeline) ServiceImageRef(s Service) ImageRef {
	ref, err := ParseImageRef(s.Image)
	if err != nil {
		panic(fmt.Sprintf("pipeline: service %q: %v", s.Alias, err))
	}
	return ref.Resolve(p.Dir)
}
