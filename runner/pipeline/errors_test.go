package pipeline

import (
	"errors"
	"strings"
	"testing"
)

// lines joins its arguments into a file, one per line, so that the line
// numbers in the expected errors can be counted off the test table.
func lines(l ...string) string { return strings.Join(l, "\n") + "\n" }

// noSpaces stands in for the egress package's rule grammar.
func noSpaces(rule string) error {
	if strings.Contains(rule, " ") {
		return errors.New("rules contain no spaces")
	}
	return nil
}

// TestParseErrors checks every error path with its exact message,
// position and field path.
func TestParseErrors(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		rules bool // use WithRuleCheck(noSpaces)
		want  []string
	}{
		{
			name: "empty file",
			in:   "",
			want: []string{
				"cleanroom.yaml:1:1: the file is empty; a pipeline needs at least `version: 1` and a list of steps",
			},
		},
		{
			name: "only a comment",
			in: lines(
				"# nothing here",
			),
			want: []string{
				"cleanroom.yaml:1:1: the file is empty; a pipeline needs at least `version: 1` and a list of steps",
			},
		},
		{
			name: "two documents",
			in: lines(
				"version: 1",
				"---",
				"version: 1",
			),
			want: []string{
				"cleanroom.yaml:3:1: a pipeline file holds one YAML document; remove the second one (after ---)",
			},
		},
		{
			name: "root is a list",
			in: lines(
				"- name: build",
			),
			want: []string{
				"cleanroom.yaml:1:1: expected a mapping of fields (version: 1, steps: …), got a list",
			},
		},
		{
			name: "root is a string",
			in: lines(
				"hello",
			),
			want: []string{
				"cleanroom.yaml:1:1: expected a mapping of fields (version: 1, steps: …), got the string \"hello\"",
			},
		},
		{
			name: "yaml syntax error",
			in: lines(
				"version: 1",
				"image: alpine",
				"steps: [{name: a, run: b}",
				"artifacts: []",
			),
			want: []string{
				"cleanroom.yaml:4:1: invalid YAML: ',' or ']' must be specified",
			},
		},
		{
			name: "tab indentation",
			in: lines(
				"version: 1",
				"image: alpine",
				"steps:",
				"\t- name: a",
			),
			want: []string{
				"cleanroom.yaml:4:1: invalid YAML: found character '\\t' that cannot start any token (indent YAML with spaces, not tabs)",
			},
		},
		{
			name: "duplicate key",
			in: lines(
				"version: 1",
				"image: alpine",
				"steps: [{name: a, run: b}]",
				"image: debian",
			),
			want: []string{
				"cleanroom.yaml:4:1: invalid YAML: mapping key \"image\" already defined at [2:1]",
			},
		},
		{
			name: "missing version",
			in: lines(
				"image: alpine",
				"steps: [{name: a, run: b}]",
			),
			want: []string{
				"cleanroom.yaml:1:1: version: missing; add `version: 1` at the top of the file",
			},
		},
		{
			name: "unsupported version stops",
			in: lines(
				"version: 2",
				"pipelines: {}",
			),
			want: []string{
				"cleanroom.yaml:1:10: version: unsupported version 2; this cleanroom reads version 1",
			},
		},
		{
			name: "version as string",
			in: lines(
				"version: \"1\"",
				"image: alpine",
				"steps: [{name: a, run: b}]",
			),
			want: []string{
				"cleanroom.yaml:1:10: version: expected an integer, got the string \"1\"",
			},
		},
		{
			name: "version as float",
			in: lines(
				"version: 1.0",
				"image: alpine",
				"steps: [{name: a, run: b}]",
			),
			want: []string{
				"cleanroom.yaml:1:10: version: expected an integer, got the number 1.0",
			},
		},
		{
			name: "unknown top-level field with suggestion",
			in: lines(
				"version: 1",
				"image: alpine",
				"stpes: []",
				"steps: [{name: a, run: b}]",
			),
			want: []string{
				"cleanroom.yaml:3:1: stpes: unknown field (did you mean \"steps\"?); valid fields here: version, image, runtime, env, egress, services, steps, artifacts, sign",
			},
		},
		{
			name: "unknown top-level field",
			in: lines(
				"version: 1",
				"image: alpine",
				"steps: [{name: a, run: b}]",
				"cache: true",
			),
			want: []string{
				"cleanroom.yaml:4:1: cache: unknown field; valid fields here: version, image, runtime, env, egress, services, steps, artifacts, sign",
			},
		},
		{
			name: "missing steps",
			in: lines(
				"version: 1",
				"image: alpine",
			),
			want: []string{
				"cleanroom.yaml:1:1: steps: missing; a pipeline needs at least one step, e.g. steps: [{name: build, run: make}]",
			},
		},
		{
			name: "empty steps",
			in: lines(
				"version: 1",
				"image: alpine",
				"steps: []",
			),
			want: []string{
				"cleanroom.yaml:3:8: steps: empty; a pipeline needs at least one step",
			},
		},
		{
			name: "null steps",
			in: lines(
				"version: 1",
				"image: alpine",
				"steps:",
			),
			want: []string{
				"cleanroom.yaml:3:8: steps: expected a list of steps, got nothing (an empty or null value)",
			},
		},
		{
			name: "steps as mapping",
			in: lines(
				"version: 1",
				"image: alpine",
				"steps: {build: {run: make}}",
			),
			want: []string{
				"cleanroom.yaml:3:8: steps: expected a list of steps, got a mapping",
			},
		},
		{
			name: "step is a string",
			in: lines(
				"version: 1",
				"image: alpine",
				"steps:",
				"  - make",
			),
			want: []string{
				"cleanroom.yaml:4:5: steps[0]: expected a mapping with at least name and run, got the string \"make\"",
			},
		},
		{
			name: "missing name and run",
			in: lines(
				"version: 1",
				"image: alpine",
				"steps:",
				"  - image: debian",
			),
			want: []string{
				"cleanroom.yaml:4:5: steps[0].name: missing; every step needs a name (lower-case letters, digits, '_', '.', '-')",
				"cleanroom.yaml:4:5: steps[0].run: missing; give the shell commands the step runs, e.g. run: make test",
			},
		},
		{
			name: "invalid name upper-case",
			in: lines(
				"version: 1",
				"image: alpine",
				"steps:",
				"  - name: Build",
				"    run: make",
			),
			want: []string{
				"cleanroom.yaml:4:11: steps[0].name: invalid step name \"Build\": use 1 to 63 lower-case letters, digits, '_', '.' or '-', starting with a letter or digit (names become parts of container ids and log prefixes)",
			},
		},
		{
			name: "invalid name too long",
			in: lines(
				"version: 1",
				"image: alpine",
				"steps:",
				"  - name: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
				"    run: make",
			),
			want: []string{
				"cleanroom.yaml:4:11: steps[0].name: invalid step name \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\": use 1 to 63 lower-case letters, digits, '_', '.' or '-', starting with a letter or digit (names become parts of container ids and log prefixes)",
			},
		},
		{
			name: "invalid name leading dash",
			in: lines(
				"version: 1",
				"image: alpine",
				"steps:",
				"  - name: -x",
				"    run: make",
			),
			want: []string{
				"cleanroom.yaml:4:11: steps[0].name: invalid step name \"-x\": use 1 to 63 lower-case letters, digits, '_', '.' or '-', starting with a letter or digit (names become parts of container ids and log prefixes)",
			},
		},
		{
			name: "name is a number",
			in: lines(
				"version: 1",
				"image: alpine",
				"steps:",
				"  - name: 1",
				"    run: make",
			),
			want: []string{
				"cleanroom.yaml:4:11: steps[0].name: expected a string, got the number 1; quote it if you mean the string: \"1\"",
			},
		},
		{
			name: "duplicate names",
			in: lines(
				"version: 1",
				"image: alpine",
				"steps:",
				"  - name: build",
				"    run: make",
				"  - name: test",
				"    run: make test",
				"  - name: build",
				"    run: make again",
			),
			want: []string{
				"cleanroom.yaml:8:11: steps[2].name: duplicate step name \"build\"; steps[0] (line 4) already uses it",
			},
		},
		{
			name: "empty run",
			in: lines(
				"version: 1",
				"image: alpine",
				"steps:",
				"  - name: a",
				"    run: \"\"",
			),
			want: []string{
				"cleanroom.yaml:5:10: steps[0].run: empty; give the shell commands the step runs, e.g. run: make test",
			},
		},
		{
			name: "blank run",
			in: lines(
				"version: 1",
				"image: alpine",
				"steps:",
				"  - name: a",
				"    run: \" \\n \"",
			),
			want: []string{
				"cleanroom.yaml:5:10: steps[0].run: empty; give the shell commands the step runs, e.g. run: make test",
			},
		},
		{
			name: "run with NUL",
			in: lines(
				"version: 1",
				"image: alpine",
				"steps:",
				"  - name: a",
				"    run: \"make\\0\"",
			),
			want: []string{
				"cleanroom.yaml:5:10: steps[0].run: contains a NUL byte, which cannot be passed to /bin/sh",
			},
		},
		{
			name: "run as a list",
			in: lines(
				"version: 1",
				"image: alpine",
				"steps:",
				"  - name: a",
				"    run: [make, test]",
			),
			want: []string{
				"cleanroom.yaml:5:10: steps[0].run: expected a string, got a list",
			},
		},
		{
			name: "unknown step field",
			in: lines(
				"version: 1",
				"image: alpine",
				"steps:",
				"  - name: a",
				"    run: make",
				"    tiemout: 5m",
			),
			want: []string{
				"cleanroom.yaml:6:5: steps[0].tiemout: unknown field (did you mean \"timeout\"?); valid fields here: name, image, run, env, egress, services, timeout, resources",
			},
		},
		{
			name: "image missing everywhere",
			in: lines(
				"version: 1",
				"steps:",
				"  - name: a",
				"    run: make",
				"  - name: b",
				"    image: debian:12",
				"    run: make",
			),
			want: []string{
				"cleanroom.yaml:3:5: steps[0].image: missing; set image on this step or a default image at the top level (e.g. image: oci-archive:./images/builder.tar)",
			},
		},
		{
			name: "invalid default image silences missing step images",
			in: lines(
				"version: 1",
				"image: Alpine",
				"steps: [{name: a, run: b}]",
			),
			want: []string{
				"cleanroom.yaml:2:8: image: invalid image reference \"Alpine\": repository \"Alpine\" must be lower-case",
			},
		},
		{
			name: "image with scheme",
			in: lines(
				"version: 1",
				"image: alpine",
				"steps:",
				"  - name: a",
				"    image: docker://alpine",
				"    run: make",
			),
			want: []string{
				"cleanroom.yaml:5:12: steps[0].image: invalid image reference \"docker://alpine\": no URL scheme is accepted; use a registry reference ([HOST[:PORT]/]PATH[:TAG][@sha256:DIGEST], e.g. golang:1.26 or registry.example.org/team/builder@sha256:…), oci-archive:PATH or docker-archive:PATH",
			},
		},
		{
			name: "image with bad digest",
			in: lines(
				"version: 1",
				"image: alpine",
				"steps:",
				"  - name: a",
				"    image: alpine@sha256:abc",
				"    run: make",
			),
			want: []string{
				"cleanroom.yaml:5:12: steps[0].image: invalid image reference \"alpine@sha256:abc\": digest \"sha256:abc\" must be sha256: followed by 64 lower-case hex digits",
			},
		},
		{
			name: "image archive without path",
			in: lines(
				"version: 1",
				"image: alpine",
				"steps:",
				"  - name: a",
				"    image: 'oci-archive:'",
				"    run: make",
			),
			want: []string{
				"cleanroom.yaml:5:12: steps[0].image: \"oci-archive:\" needs a path to the archive, e.g. oci-archive:./images/builder.tar",
			},
		},
		{
			name: "timeout not go syntax",
			in: lines(
				"version: 1",
				"image: alpine",
				"steps:",
				"  - name: a",
				"    run: make",
				"    timeout: 10 minutes",
			),
			want: []string{
				"cleanroom.yaml:6:14: steps[0].timeout: invalid duration \"10 minutes\": use a number with a unit (ms, s, m, h), e.g. 90s, 10m or 1h30m",
			},
		},
		{
			name: "timeout without unit",
			in: lines(
				"version: 1",
				"image: alpine",
				"steps:",
				"  - name: a",
				"    run: make",
				"    timeout: 90",
			),
			want: []string{
				"cleanroom.yaml:6:14: steps[0].timeout: invalid duration \"90\": add a unit, e.g. 90s or 90m",
			},
		},
		{
			name: "timeout zero",
			in: lines(
				"version: 1",
				"image: alpine",
				"steps:",
				"  - name: a",
				"    run: make",
				"    timeout: 0s",
			),
			want: []string{
				"cleanroom.yaml:6:14: steps[0].timeout: invalid duration \"0s\": must be greater than zero",
			},
		},
		{
			name: "timeout negative",
			in: lines(
				"version: 1",
				"image: alpine",
				"steps:",
				"  - name: a",
				"    run: make",
				"    timeout: -5m",
			),
			want: []string{
				"cleanroom.yaml:6:14: steps[0].timeout: invalid duration \"-5m\": must be greater than zero",
			},
		},
		{
			name: "timeout boolean",
			in: lines(
				"version: 1",
				"image: alpine",
				"steps:",
				"  - name: a",
				"    run: make",
				"    timeout: true",
			),
			want: []string{
				"cleanroom.yaml:6:14: steps[0].timeout: expected a duration such as 90s, 10m or 1h30m, got the boolean true",
			},
		},
		{
			name: "resources not a mapping",
			in: lines(
				"version: 1",
				"image: alpine",
				"steps:",
				"  - name: a",
				"    run: make",
				"    resources: big",
			),
			want: []string{
				"cleanroom.yaml:6:16: steps[0].resources: expected a mapping with memory, cpus and pids, got the string \"big\"",
			},
		},
		{
			name: "resources unknown field",
			in: lines(
				"version: 1",
				"image: alpine",
				"steps:",
				"  - name: a",
				"    run: make",
				"    resources: {mem: 1GiB}",
			),
			want: []string{
				"cleanroom.yaml:6:17: steps[0].resources.mem: unknown field; valid fields here: memory, cpus, pids",
			},
		},
		{
			name: "memory unknown unit",
			in: lines(
				"version: 1",
				"image: alpine",
				"steps:",
				"  - name: a",
				"    run: make",
				"    resources: {memory: 1gb}",
			),
			want: []string{
				"cleanroom.yaml:6:25: steps[0].resources.memory: invalid size \"1gb\": unknown unit \"gb\"; use a whole number of bytes or a number with a unit: KiB, MiB, GiB, TiB (or Ki, Mi, Gi, Ti) for powers of 1024, KB, MB, GB, TB (or K, M, G, T) for powers of 1000; e.g. 512MiB, 2GiB, 1.5Gi",
			},
		},
		{
			name: "memory zero",
			in: lines(
				"version: 1",
				"image: alpine",
				"steps:",
				"  - name: a",
				"    run: make",
				"    resources: {memory: 0}",
			),
			want: []string{
				"cleanroom.yaml:6:25: steps[0].resources.memory: invalid size \"0\": must be greater than zero",
			},
		},
		{
			name: "memory negative",
			in: lines(
				"version: 1",
				"image: alpine",
				"steps:",
				"  - name: a",
				"    run: make",
				"    resources: {memory: -1Gi}",
			),
			want: []string{
				"cleanroom.yaml:6:25: steps[0].resources.memory: invalid size \"-1Gi\": must be positive; use a whole number of bytes or a number with a unit: KiB, MiB, GiB, TiB (or Ki, Mi, Gi, Ti) for powers of 1024, KB, MB, GB, TB (or K, M, G, T) for powers of 1000; e.g. 512MiB, 2GiB, 1.5Gi",
			},
		},
		{
			name: "memory overflow",
			in: lines(
				"version: 1",
				"image: alpine",
				"steps:",
				"  - name: a",
				"    run: make",
				"    resources: {memory: 9999999TiB}",
			),
			want: []string{
				"cleanroom.yaml:6:25: steps[0].resources.memory: invalid size \"9999999TiB\": too large (the maximum is 9223372036854775807 bytes)",
			},
		},
		{
			name: "memory fractional bytes",
			in: lines(
				"version: 1",
				"image: alpine",
				"steps:",
				"  - name: a",
				"    run: make",
				"    resources: {memory: 0.1Ki}",
			),
			want: []string{
				"cleanroom.yaml:6:25: steps[0].resources.memory: invalid size \"0.1Ki\": not a whole number of bytes",
			},
		},
		{
			name: "memory boolean",
			in: lines(
				"version: 1",
				"image: alpine",
				"steps:",
				"  - name: a",
				"    run: make",
				"    resources: {memory: true}",
			),
			want: []string{
				"cleanroom.yaml:6:25: steps[0].resources.memory: expected a size such as 512MiB or 2GiB, got the boolean true",
			},
		},
		{
			name: "cpus zero",
			in: lines(
				"version: 1",
				"image: alpine",
				"steps:",
				"  - name: a",
				"    run: make",
				"    resources: {cpus: 0}",
			),
			want: []string{
				"cleanroom.yaml:6:23: steps[0].resources.cpus: must be a number of CPUs between 0.01 and 1024 (fractions allowed, e.g. 1.5); got 0",
			},
		},
		{
			name: "cpus too many",
			in: lines(
				"version: 1",
				"image: alpine",
				"steps:",
				"  - name: a",
				"    run: make",
				"    resources: {cpus: 2000}",
			),
			want: []string{
				"cleanroom.yaml:6:23: steps[0].resources.cpus: must be a number of CPUs between 0.01 and 1024 (fractions allowed, e.g. 1.5); got 2000",
			},
		},
		{
			name: "cpus quoted",
			in: lines(
				"version: 1",
				"image: alpine",
				"steps:",
				"  - name: a",
				"    run: make",
				"    resources: {cpus: \"1.5\"}",
			),
			want: []string{
				"cleanroom.yaml:6:23: steps[0].resources.cpus: expected a number, got the string \"1.5\"",
			},
		},
		{
			name: "cpus nan",
			in: lines(
				"version: 1",
				"image: alpine",
				"steps:",
				"  - name: a",
				"    run: make",
				"    resources: {cpus: .nan}",
			),
			want: []string{
				"cleanroom.yaml:6:23: steps[0].resources.cpus: must be a number of CPUs between 0.01 and 1024 (fractions allowed, e.g. 1.5); got NaN",
			},
		},
		{
			name: "pids zero",
			in: lines(
				"version: 1",
				"image: alpine",
				"steps:",
				"  - name: a",
				"    run: make",
				"    resources: {pids: 0}",
			),
			want: []string{
				"cleanroom.yaml:6:23: steps[0].resources.pids: must be a positive number of processes, e.g. 512; got 0",
			},
		},
		{
			name: "pids fractional",
			in: lines(
				"version: 1",
				"image: alpine",
				"steps:",
				"  - name: a",
				"    run: make",
				"    resources: {pids: 1.5}",
			),
			want: []string{
				"cleanroom.yaml:6:23: steps[0].resources.pids: expected an integer, got the number 1.5",
			},
		},
		{
			name: "pids quoted",
			in: lines(
				"version: 1",
				"image: alpine",
				"steps:",
				"  - name: a",
				"    run: make",
				"    resources: {pids: \"512\"}",
			),
			want: []string{
				"cleanroom.yaml:6:23: steps[0].resources.pids: expected an integer, got the string \"512\"",
			},
		},
		{
			name: "pids overflow",
			in: lines(
				"version: 1",
				"image: alpine",
				"steps:",
				"  - name: a",
				"    run: make",
				"    resources: {pids: 99999999999999999999}",
			),
			want: []string{
				"cleanroom.yaml:6:23: steps[0].resources.pids: integer 99999999999999999999 is out of range",
			},
		},
		{
			name: "env number value",
			in: lines(
				"version: 1",
				"image: alpine",
				"env: {CGO_ENABLED: 0}",
				"steps: [{name: a, run: b}]",
			),
			want: []string{
				"cleanroom.yaml:3:20: env.CGO_ENABLED: expected a string, got the number 0; quote it if you mean the string: \"0\"",
			},
		},
		{
			name: "env boolean value",
			in: lines(
				"version: 1",
				"image: alpine",
				"steps:",
				"  - name: a",
				"    run: make",
				"    env:",
				"      VERBOSE: true",
			),
			want: []string{
				"cleanroom.yaml:7:16: steps[0].env.VERBOSE: expected a string, got the boolean true; quote it if you mean the string: \"true\"",
			},
		},
		{
			name: "env null value",
			in: lines(
				"version: 1",
				"image: alpine",
				"env:",
				"  EMPTY:",
				"steps: [{name: a, run: b}]",
			),
			want: []string{
				"cleanroom.yaml:4:9: env.EMPTY: expected a string, got nothing (an empty or null value)",
			},
		},
		{
			name: "env list value",
			in: lines(
				"version: 1",
				"image: alpine",
				"env: {PATHS: [a, b]}",
				"steps: [{name: a, run: b}]",
			),
			want: []string{
				"cleanroom.yaml:3:14: env.PATHS: expected a string, got a list",
			},
		},
		{
			name: "env invalid name",
			in: lines(
				"version: 1",
				"image: alpine",
				"env: {1ST: x, A-B: y}",
				"steps: [{name: a, run: b}]",
			),
			want: []string{
				"cleanroom.yaml:3:7: env.\"1ST\": invalid variable name \"1ST\": use letters, digits and '_', not starting with a digit",
				"cleanroom.yaml:3:15: env.\"A-B\": invalid variable name \"A-B\": use letters, digits and '_', not starting with a digit",
			},
		},
		{
			name: "env reserved names",
			in: lines(
				"version: 1",
				"image: alpine",
				"env:",
				"  HTTPS_PROXY: http://proxy:3128",
				"  no_proxy: localhost",
				"  GOPROXY: direct",
				"  GOFLAGS: -mod=mod",
				"  PATH: /usr/bin",
				"steps: [{name: a, run: b}]",
			),
			want: []string{
				"cleanroom.yaml:4:3: env.HTTPS_PROXY: HTTPS_PROXY is reserved: the runner sets HTTP_PROXY, HTTPS_PROXY, NO_PROXY, ALL_PROXY (in either case), GOPROXY, GOSUMDB, GONOSUMDB and GONOSUMCHECK to send all traffic through its egress proxy; remove it and list the hosts the step needs under egress.allow",
				"cleanroom.yaml:5:3: env.no_proxy: no_proxy is reserved: the runner sets HTTP_PROXY, HTTPS_PROXY, NO_PROXY, ALL_PROXY (in either case), GOPROXY, GOSUMDB, GONOSUMDB and GONOSUMCHECK to send all traffic through its egress proxy; remove it and list the hosts the step needs under egress.allow",
				"cleanroom.yaml:6:3: env.GOPROXY: GOPROXY is reserved: the runner sets HTTP_PROXY, HTTPS_PROXY, NO_PROXY, ALL_PROXY (in either case), GOPROXY, GOSUMDB, GONOSUMDB and GONOSUMCHECK to send all traffic through its egress proxy; remove it and list the hosts the step needs under egress.allow",
			},
		},
		{
			name: "env NUL in value",
			in: lines(
				"version: 1",
				"image: alpine",
				"env: {A: \"x\\0y\"}",
				"steps: [{name: a, run: b}]",
			),
			want: []string{
				"cleanroom.yaml:3:10: env.A: contains a NUL byte, which an environment variable cannot hold",
			},
		},
		{
			name: "env not a mapping",
			in: lines(
				"version: 1",
				"image: alpine",
				"env: [A=1]",
				"steps: [{name: a, run: b}]",
			),
			want: []string{
				"cleanroom.yaml:3:6: env: expected a mapping of NAME: \"value\", got a list",
			},
		},
		{
			name: "egress allow is a string",
			in: lines(
				"version: 1",
				"image: alpine",
				"egress: {allow: example.org}",
				"steps: [{name: a, run: b}]",
			),
			want: []string{
				"cleanroom.yaml:3:17: egress.allow: expected a list of rules, e.g. [\"goproxy.example.org\"] ([] for no egress), got the string \"example.org\"",
			},
		},
		{
			name: "egress allow null",
			in: lines(
				"version: 1",
				"image: alpine",
				"egress:",
				"  allow:",
				"steps: [{name: a, run: b}]",
			),
			want: []string{
				"cleanroom.yaml:4:9: egress.allow: expected a list of rules, e.g. [\"goproxy.example.org\"] ([] for no egress), got nothing (an empty or null value)",
			},
		},
		{
			name: "egress empty and non-string rules",
			in: lines(
				"version: 1",
				"image: alpine",
				"egress:",
				"  allow: [\"\", 443, {host: x}]",
				"steps: [{name: a, run: b}]",
			),
			want: []string{
				"cleanroom.yaml:4:11: egress.allow[0]: empty rule; write a host (example.org), a suffix (*.example.org), host:port or an IP/CIDR",
				"cleanroom.yaml:4:15: egress.allow[1]: expected a string, got the number 443; quote it if you mean the string: \"443\"",
				"cleanroom.yaml:4:20: egress.allow[2]: expected a string, got a mapping",
			},
		},
		{
			name: "egress rule check",
			in: lines(
				"version: 1",
				"image: alpine",
				"egress:",
				"  allow:",
				"    - example.org",
				"    - bad rule",
				"steps:",
				"  - name: a",
				"    run: make",
				"    egress:",
				"      allow: [ok.example, also bad]",
			),
			rules: true,
			want: []string{
				"cleanroom.yaml:6:7: egress.allow[1]: rules contain no spaces",
				"cleanroom.yaml:11:27: steps[0].egress.allow[1]: rules contain no spaces",
			},
		},
		{
			name: "egress invalid mode",
			in: lines(
				"version: 1",
				"image: alpine",
				"egress: {mode: strict}",
				"steps: [{name: a, run: b, egress: {mode: 1}}]",
			),
			want: []string{
				"cleanroom.yaml:3:16: egress.mode: invalid mode \"strict\": use enforce (deny what is not allowed) or audit (allow everything, record what would be denied)",
				"cleanroom.yaml:4:42: steps[0].egress.mode: expected a string, got the number 1; quote it if you mean the string: \"1\"",
			},
		},
		{
			name: "egress unknown field",
			in: lines(
				"version: 1",
				"image: alpine",
				"egress: {allowed: [x]}",
				"steps: [{name: a, run: b}]",
			),
			want: []string{
				"cleanroom.yaml:3:10: egress.allowed: unknown field (did you mean \"allow\"?); valid fields here: allow, mode, inspect, cache",
			},
		},
		{
			name: "artifacts problems",
			in: lines(
				"version: 1",
				"image: alpine",
				"steps: [{name: a, run: b}]",
				"artifacts:",
				"  - /abs/out",
				"  - out/../../etc",
				"  - out/[",
				"  - \"\"",
				"  - 7",
			),
			want: []string{
				"cleanroom.yaml:5:5: artifacts[0]: \"/abs/out\" is absolute; artifacts are relative to the workspace, e.g. \"abs/out\"",
				"cleanroom.yaml:6:5: artifacts[1]: \"out/../../etc\" contains \"..\"; artifacts must be inside the workspace",
				"cleanroom.yaml:7:5: artifacts[2]: invalid glob \"out/[\": check the [ ] classes and \\ escapes (syntax of Go's path.Match, plus ** for any number of directories)",
				"cleanroom.yaml:8:5: artifacts[3]: empty pattern; write a path or glob relative to the workspace, e.g. out/app or out/**/*.tar.gz",
				"cleanroom.yaml:9:5: artifacts[4]: expected a string, got the number 7; quote it if you mean the string: \"7\"",
			},
		},
		{
			name: "artifacts not a list",
			in: lines(
				"version: 1",
				"image: alpine",
				"steps: [{name: a, run: b}]",
				"artifacts: out/app",
			),
			want: []string{
				"cleanroom.yaml:4:12: artifacts: expected a list of globs relative to the workspace, e.g. [\"out/app\"], got the string \"out/app\"",
			},
		},
		{
			name: "sign keyless not boolean",
			in: lines(
				"version: 1",
				"image: alpine",
				"steps: [{name: a, run: b}]",
				"sign: {keyless: yes}",
			),
			want: []string{
				"cleanroom.yaml:4:17: sign.keyless: expected true or false, got the string \"yes\"",
			},
		},
		{
			name: "sign unknown field",
			in: lines(
				"version: 1",
				"image: alpine",
				"steps: [{name: a, run: b}]",
				"sign: {key: cosign.key}",
			),
			want: []string{
				"cleanroom.yaml:4:8: sign.key: unknown field; valid fields here: keyless",
			},
		},
		{
			name: "unknown alias",
			in: lines(
				"version: 1",
				"image: alpine",
				"steps:",
				"  - name: a",
				"    run: *script",
			),
			want: []string{
				"cleanroom.yaml:5:10: steps[0].run: alias *script does not name an anchor (&script) defined before it",
			},
		},
		{
			name: "unsupported tag",
			in: lines(
				"version: 1",
				"image: alpine",
				"steps:",
				"  - name: a",
				"    run: !!binary bWFrZQ==",
			),
			want: []string{
				"cleanroom.yaml:5:10: steps[0].run: YAML tag !!binary is not supported; remove it (only !!str, to force a string, is accepted)",
			},
		},
		{
			name: "merge of a scalar",
			in: lines(
				"version: 1",
				"image: alpine",
				"steps:",
				"  - <<: 5",
				"    name: a",
				"    run: make",
			),
			want: []string{
				"cleanroom.yaml:4:9: steps[0]: expected a mapping or a list of mappings to merge, got the number 5",
			},
		},
		{
			name: "docker archive without path",
			in: lines(
				"version: 1",
				"image: alpine",
				"steps:",
				"  - name: a",
				"    image: 'docker-archive: '",
				"    run: make",
			),
			want: []string{
				"cleanroom.yaml:5:12: steps[0].image: \"docker-archive:\" needs a path to the archive, e.g. docker-archive:./images/builder.tar",
			},
		},
		{
			name: "image uppercase path",
			in: lines(
				"version: 1",
				"image: alpine",
				"steps:",
				"  - name: a",
				"    image: registry.example.org/Team/builder:1",
				"    run: make",
			),
			want: []string{
				"cleanroom.yaml:5:12: steps[0].image: invalid image reference \"registry.example.org/Team/builder:1\": repository \"registry.example.org/Team/builder\" must be lower-case",
			},
		},
		{
			name: "image bad tag",
			in: lines(
				"version: 1",
				"image: alpine",
				"steps:",
				"  - name: a",
				"    image: alpine:-1",
				"    run: make",
			),
			want: []string{
				"cleanroom.yaml:5:12: steps[0].image: invalid image reference \"alpine:-1\": tag \"-1\" must be 1 to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'",
			},
		},
		{
			name: "image bad host",
			in: lines(
				"version: 1",
				"image: alpine",
				"steps:",
				"  - name: a",
				"    image: bad_host.example:5000/x",
				"    run: make",
			),
			want: []string{
				"cleanroom.yaml:5:12: steps[0].image: invalid image reference \"bad_host.example:5000/x\": \"bad_host.example:5000\" is not a valid registry host[:port]",
			},
		},
		{
			name: "key that is not a string",
			in: lines(
				"version: 1",
				"image: alpine",
				"steps: [{name: a, run: b}]",
				"? [x, y]",
				": 1",
			),
			want: []string{
				"cleanroom.yaml:5:1: invalid YAML: found an invalid key for this map",
			},
		},
		{
			name: "errors from several steps in file order",
			in: lines(
				"version: 1",
				"steps:",
				"  - name: A",
				"    run: make",
				"  - name: b",
				"    image: debian",
				"    timeout: 1 hour",
			),
			want: []string{
				"cleanroom.yaml:3:5: steps[0].image: missing; set image on this step or a default image at the top level (e.g. image: oci-archive:./images/builder.tar)",
				"cleanroom.yaml:3:11: steps[0].name: invalid step name \"A\": use 1 to 63 lower-case letters, digits, '_', '.' or '-', starting with a letter or digit (names become parts of container ids and log prefixes)",
				"cleanroom.yaml:5:5: steps[1].run: missing; give the shell commands the step runs, e.g. run: make test",
				"cleanroom.yaml:7:14: steps[1].timeout: invalid duration \"1 hour\": use a number with a unit (ms, s, m, h), e.g. 90s, 10m or 1h30m",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var opts []Option
			if tt.rules {
				opts = append(opts, WithRuleCheck(noSpaces))
			}
			p, err := Parse("cleanroom.yaml", []byte(tt.in), opts...)
			if err == nil {
				t.Fatalf("Parse succeeded (%+v); want errors:\n%s", p, strings.Join(tt.want, "\n"))
			}
			if p != nil {
				t.Errorf("Parse returned a pipeline along with errors")
			}
			if got, want := err.Error(), strings.Join(tt.want, "\n"); got != want {
				t.Errorf("errors differ\ngot:\n%s\nwant:\n%s", got, want)
			}
			var list ErrorList
			if !errors.As(err, &list) || len(list) != len(tt.want) {
				t.Errorf("error is %T with %d entries; want an ErrorList of %d", err, len(list), len(tt.want))
			}
		})
	}
}
