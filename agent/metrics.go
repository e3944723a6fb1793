package agent

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cleanroom-ci/cleanroom/agent/jobs"
)

// metrics are the agent's Prometheus metrics. Queue depth is read from
// JetStream at scrape time, so it is the cluster's queue, the same on
// every agent; the others are this agent's.
type metrics struct {
	reg       *prometheus.Registry
	running   prometheus.Gauge
	jobs      *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	denials   prometheus.Counter
	sandboxFx prometheus.Counter
}

func newMetrics(a *Agent) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.running = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "cleanroom_agent_jobs_running", Help: "Jobs this agent is running now.",
	})
	m.jobs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cleanroom_agent_jobs_finished_total", Help: "Jobs finished by this agent, by final state.",
	}, []string{"state"})
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "cleanroom_agent_job_duration_seconds",
		Help:    "Wall time of the last attempt of jobs finished by this agent, by final state.",
		Buckets: []float64{1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600},
	}, []string{"state"})
	m.denials = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "cleanroom_agent_egress_denials_total", Help: "Egress requests denied by the steps' proxies in jobs finished by this agent.",
	})
	m.sandboxFx = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "cleanroom_agent_sandbox_failures_total", Help: "Jobs that ended in state error on this agent (exit 2: a configuration or infrastructure failure: sandbox, source fetch, pipeline or image policy, time-out; not a step's own failure).",
	})
	queue := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "cleanroom_agent_queue_depth", Help: "Jobs waiting in the shared queue for any agent.",
	}, func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		w, _, err := a.broker.QueueDepth(ctx)
		if err != nil {
			return -1
		}
		return float64(w)
	})
	m.reg.MustRegister(m.running, m.jobs, m.duration, m.denials, m.sandboxFx, queue,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

func (m *metrics) started() { m.running.Inc() }
func (m *metrics) stopped() { m.running.Dec() }

func (m *metrics) finished(j jobs.Job) {
	m.jobs.WithLabelValues(j.State).Inc()
	if n := len(j.History); n > 0 && !j.History[n-1].Started.IsZero() && !j.Finished.IsZero() {
		m.duration.WithLabelValues(j.State).Observe(j.Finished.Sub(j.History[n-1].Started).Seconds())
	}
	if j.Result != nil {
		m.denials.Add(float64(j.Result.Denials))
	}
	if j.State == jobs.StateError {
		m.sandboxFx.Inc()
	}
}
