// Command agentbench measures the throughput of `cleanroom agent` in jobs
// per minute for a trivial pipeline, with one agent and with two agents
// sharing one JetStream (a real nats-server), interleaved round by round
// (1, 2, 2, 1, …) so that machine drift hits both alike. Each measurement
// starts a fresh nats-server and fresh agents, submits every job at once
// through the API and times until the last one finishes; a job that does
// not succeed fails the benchmark.
//
//	agentbench -cleanroom BIN -nats-server BIN -image busybox.tar -o agent.json
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/cleanroom-ci/cleanroom/agent/jobs"
	"github.com/cleanroom-ci/cleanroom/internal/agenttest"
)

type measurement struct {
	Agents     int     `json:"agents"`
	Jobs       int     `json:"jobs"`
	Seconds    float64 `json:"seconds"`
	JobsPerMin float64 `json:"jobsPerMinute"`
}

type result struct {
	Rounds       int           `json:"rounds"`
	Jobs         int           `json:"jobs"`
	Concurrency  int           `json:"concurrencyPerAgent"`
	Measurements []measurement `json:"measurements"`
}

func main() {
	bin := flag.String("cleanroom", "", "cleanroom binary")
	natsBin := flag.String("nats-server", "", "nats-server binary")
	image := flag.String("image", "", "busybox OCI archive for the jobs")
	out := flag.String("o", "agent.json", "result file")
	rounds := flag.Int("rounds", 2, "rounds; each measures 1 and 2 agents")
	n := flag.Int("jobs", 20, "jobs per measurement")
	conc := flag.Int("concurrency", 2, "jobs at once per agent")
	ns := flag.String("namespace", "cleanroom-bench", "containerd namespace of the jobs")
	state := flag.String("state-dir", "/run/cleanroom-bench", "state dir of the jobs")
	flag.Parse()
	if *bin == "" || *natsBin == "" || *image == "" {
		fmt.Fprintln(os.Stderr, "agentbench: -cleanroom, -nats-server and -image are required")
		os.Exit(2)
	}
	res := result{Rounds: *rounds, Jobs: *n, Concurrency: *conc}
	for r := range *rounds {
		order := []int{1, 2}
		if r%2 == 1 {
			order = []int{2, 1}
		}
		for _, agents := range order {
			m, err := measure(*bin, *natsBin, *image, *ns, *state, agents, *n, *conc)
			if err != nil {
				fmt.Fprintln(os.Stderr, "agentbench:", err)
				os.Exit(1)
			}
			fmt.Fprintf(os.Stderr, "round %d: %d agent(s): %d jobs in %.1fs = %.1f jobs/min\n", r+1, agents, m.Jobs, m.Seconds, m.JobsPerMin)
			res.Measurements = append(res.Measurements, m)
		}
	}
	b, _ := json.MarshalIndent(res, "", "  ")
	if err := os.WriteFile(*out, append(b, '\n'), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "agentbench:", err)
		os.Exit(1)
	}
}

func measure(bin, natsBin, image, ns, state string, agents, n, conc int) (measurement, error) {
	dir, err := os.MkdirTemp("", "agentbench-")
	if err != nil {
		return measurement{}, err
	}
	defer os.RemoveAll(dir)
	nats, err := agenttest.StartNATS(natsBin, filepath.Join(dir, "nats"), 0)
	if err != nil {
		return measurement{}, err
	}
	defer nats.Stop()
	tokens := filepath.Join(dir, "tokens.json")
	token, err := agenttest.CreateToken(bin, tokens, "bench", "submit")
	if err != nil {
		return measurement{}, err
	}
	var clients []agenttest.Client
	for i := range agents {
		a, err := agenttest.StartAgent(agenttest.AgentConfig{
			Binary: bin, Dir: filepath.Join(dir, fmt.Sprintf("agent-%d", i)), StateDir: state, Namespace: ns,
			TokensFile: tokens, NATSURL: nats.URL, ID: fmt.Sprintf("bench-%d", i), Concurrency: conc,
		})
		if err != nil {
			return measurement{}, err
		}
		defer a.Stop(time.Minute)
		clients = append(clients, agenttest.Client{URL: a.URL, Token: token})
	}
	tgz, err := agenttest.Tarball(map[string]string{
		"cleanroom.yaml": `version: 1
image: oci-archive:./images/builder.tar
egress: {allow: []}
steps:
  - name: build
    run: mkdir -p out && echo hello > out/hello.txt && sha256sum out/hello.txt
    timeout: 1m
artifacts: [out/hello.txt]
`,
		"images/builder.tar": "@" + image,
	})
	if err != nil {
		return measurement{}, err
	}
	start := time.Now()
	var ids []string
	for i := range n {
		id, err := clients[i%len(clients)].SubmitTarball(tgz, "")
		if err != nil {
			return measurement{}, err
		}
		ids = append(ids, id)
	}
	for _, id := range ids {
		j, err := clients[0].Wait(id, 10*time.Minute, agenttest.Finished)
		if err != nil {
			return measurement{}, err
		}
		if j.State != jobs.StateSucceeded {
			log, _ := clients[0].Do("GET", "/api/v1/jobs/"+id+"/log", "", nil, nil)
			return measurement{}, fmt.Errorf("job %s ended %s: %s\n%s", id, j.State, j.Error, log.Body)
		}
	}
	secs := time.Since(start).Seconds()
	return measurement{Agents: agents, Jobs: n, Seconds: secs, JobsPerMin: float64(n) / secs * 60}, nil
}
