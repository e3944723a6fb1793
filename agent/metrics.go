package agent

import (
	"context"
	"net/http"
	"runtime"
	"strings"
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
	reg        *prometheus.Registry
	running    prometheus.Gauge
	jobs       *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	queueWait  prometheus.Histogram
	steps      *prometheus.HistogramVec
	denials    prometheus.Counter
	errors     *prometheus.CounterVec
	lostJobs   prometheus.Counter
	retries    prometheus.Counter
	handed     *prometheus.CounterVec
	pending    prometheus.Gauge
	spooled    prometheus.Gauge
	webhooks   *prometheus.CounterVec
	authFailed *prometheus.CounterVec
	statuses   *prometheus.CounterVec
}

// Outcomes of a webhook delivery (label "outcome").
const (
	hookQueued    = "queued"
	hookDuplicate = "duplicate"
	hookSpooled   = "spooled"
	hookIgnored   = "ignored"
	hookRefused   = "refused"
	hookLimited   = "limited"
	hookUnknown   = "unknown_hook"
)

var durationBuckets = []float64{1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600}

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
		Buckets: durationBuckets,
	}, []string{"state"})
	m.queueWait = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "cleanroom_agent_queue_wait_seconds",
		Help:    "Time jobs waited in the queue before this agent started them (since submission, or since the previous attempt ended).",
		Buckets: []float64{0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600},
	})
	m.steps = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "cleanroom_agent_step_duration_seconds",
		Help:    "Wall time of the steps of jobs finished by this agent, by step status.",
		Buckets: durationBuckets,
	}, []string{"status"})
	m.denials = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "cleanroom_agent_egress_denials_total", Help: "Egress requests denied by the steps' proxies in jobs finished by this agent.",
	})
	m.errors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cleanroom_agent_job_errors_total",
		Help: "Jobs that ended in state error on this agent (exit 2), by cause: user (the pipeline, its images or egress refused) or infrastructure (sandbox, source fetch, storage, time-out, loss).",
	}, []string{"cause"})
	m.lostJobs = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "cleanroom_agent_jobs_lost_total", Help: "Jobs this agent found running on an agent that was lost (killed, crashed, partitioned past ack_wait).",
	})
	m.retries = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "cleanroom_agent_jobs_retried_total", Help: "Lost jobs this agent started again (jobs.on_agent_loss: retry).",
	})
	m.handed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cleanroom_agent_jobs_handed_back_total", Help: "Running jobs this agent handed back to the queue uncounted, by reason: drain (stopped past jobs.grace) or queue_unreachable (NATS unreachable past ack_wait).",
	}, []string{"reason"})
	m.pending = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "cleanroom_agent_results_pending", Help: "Finished jobs whose result this agent keeps until NATS takes it.",
	})
	m.spooled = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "cleanroom_agent_submissions_spooled", Help: "Submissions and webhook deliveries this agent took while NATS was unreachable and has not queued yet.",
	})
	m.webhooks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cleanroom_agent_webhook_deliveries_total", Help: "Webhook deliveries, by hook and outcome (queued, duplicate, spooled, ignored, refused, limited, unknown_hook).",
	}, []string{"hook", "outcome"})
	m.authFailed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cleanroom_agent_auth_failures_total", Help: "Requests with an invalid API token, by outcome: invalid (401) or limited (429, the address failed too often).",
	}, []string{"outcome"})
	m.statuses = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cleanroom_agent_commit_statuses_total", Help: "Commit statuses this agent posted to forges, by hook and outcome (posted, failed).",
	}, []string{"hook", "outcome"})
	// Pre-create the series alerts look at, so that they exist at 0.
	for _, c := range []string{jobs.CauseUser, jobs.CauseInfrastructure} {
		m.errors.WithLabelValues(c)
	}
	for _, r := range []string{"drain", "queue_unreachable"} {
		m.handed.WithLabelValues(r)
	}
	for _, o := range []string{"invalid", "limited"} {
		m.authFailed.WithLabelValues(o)
	}
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
	connected := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "cleanroom_agent_nats_connected", Help: "1 while this agent is connected to NATS, else 0.",
	}, func() float64 {
		if a.broker.Connected() {
			return 1
		}
		return 0
	})
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "cleanroom_agent_build_info", Help: "Always 1; the labels name this agent's build.",
		ConstLabels: prometheus.Labels{"version": orDefault(a.opts.Version, "dev"), "goversion": runtime.Version(), "agent": a.id},
	})
	info.Set(1)
	m.reg.MustRegister(m.running, m.jobs, m.duration, m.queueWait, m.steps, m.denials, m.errors,
		m.lostJobs, m.retries, m.handed, m.pending, m.spooled, m.webhooks, m.authFailed, m.statuses, queue, connected, info,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

func (m *metrics) started() { m.running.Inc() }
func (m *metrics) stopped() { m.running.Dec() }

func (m *metrics) lost()    { m.lostJobs.Inc() }
func (m *metrics) retried() { m.retries.Inc() }

func (m *metrics) handedBack(why string) {
	reason := "drain"
	if strings.Contains(why, "unreachable") {
		reason = "queue_unreachable"
	}
	m.handed.WithLabelValues(reason).Inc()
}

func (m *metrics) pendingChanged(n int) { m.pending.Set(float64(n)) }
func (m *metrics) spoolChanged(n int)   { m.spooled.Set(float64(n)) }

func (m *metrics) waited(d time.Duration) { m.queueWait.Observe(max(d, 0).Seconds()) }

func (m *metrics) webhook(hook, outcome string) { m.webhooks.WithLabelValues(hook, outcome).Inc() }

func (m *metrics) authFailure(limited bool) {
	if limited {
		m.authFailed.WithLabelValues("limited").Inc()
	} else {
		m.authFailed.WithLabelValues("invalid").Inc()
	}
}

func (m *metrics) finished(j jobs.Job) {
	m.jobs.WithLabelValues(j.State).Inc()
	if n := len(j.History); n > 0 && !j.History[n-1].Started.IsZero() && !j.Finished.IsZero() {
		m.duration.WithLabelValues(j.State).Observe(j.Finished.Sub(j.History[n-1].Started).Seconds())
	}
	if j.Result != nil {
		m.denials.Add(float64(j.Result.Denials))
		for _, s := range j.Result.Steps {
			m.steps.WithLabelValues(s.Status).Observe(s.Seconds)
		}
	}
	if j.State == jobs.StateError {
		m.errors.WithLabelValues(orDefault(j.Cause, jobs.CauseInfrastructure)).Inc()
	}
}

func (m *metrics) statusPosted(hook string, ok bool) {
	if ok {
		m.statuses.WithLabelValues(hook, "posted").Inc()
	} else {
		m.statuses.WithLabelValues(hook, "failed").Inc()
	}
}
