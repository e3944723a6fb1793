package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Names of what the agents share on JetStream. Every agent creates them
// with the same configuration on start, which JetStream treats as a no-op
// when they exist.
const (
	QueueStream  = "CLEANROOM_JOBS"
	queueSubject = "cleanroom.jobs"
	consumerName = "cleanroom-agents"
	LogStream    = "CLEANROOM_LOGS"
	logSubject   = "cleanroom.logs."
	StateBucket  = "cleanroom-jobs"
	FileBucket   = "cleanroom-files"

	// endHeader marks the last message of a job's log.
	endHeader = "Cleanroom-Log-End"
)

// ErrNotFound is returned for an unknown job or output.
var ErrNotFound = errors.New("not found")

// ErrConflict is returned when a compare-and-set lost against another
// writer (another agent, or the API).
var ErrConflict = errors.New("job state changed concurrently")

// Options configure the connection to JetStream.
type Options struct {
	// URL of an external NATS server or cluster (comma-separated); empty
	// starts an embedded server with JetStream in StoreDir.
	URL string
	// Credentials is a NATS credentials file for URL.
	Credentials string
	// StoreDir holds the embedded server's JetStream data.
	StoreDir string
	// Replicas of the streams and buckets on a cluster (default 1).
	Replicas int
	// AckWait is how long a job stays with an agent that stops
	// heartbeating before JetStream redelivers it (default 30s).
	AckWait time.Duration
	// LogRetention bounds how long live logs stay in the log stream
	// (the full log is also kept as an output); default 7 days.
	LogRetention time.Duration
	// Name identifies this agent's connection in NATS monitoring.
	Name   string
	Logger hclog.Logger
}

// Broker is the agent's handle on the shared state.
type Broker struct {
	ns      *server.Server // embedded server, nil with an external URL
	nc      *nats.Conn
	js      jetstream.JetStream
	cons    jetstream.Consumer
	kv      jetstream.KeyValue
	files   jetstream.ObjectStore
	ackWait time.Duration
	log     hclog.Logger

	// reconnected gets a value each time the connection comes back;
	// lastOutage is when it was last lost or regained.
	reconnected chan struct{}
	mu          sync.Mutex
	lastOutage  time.Time
}

// Open connects (or starts the embedded server) and makes sure the
// stream, consumer and buckets exist.
func Open(ctx context.Context, o Options) (*Broker, error) {
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	if o.AckWait <= 0 {
		o.AckWait = 30 * time.Second
	}
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	if o.LogRetention <= 0 {
		o.LogRetention = 7 * 24 * time.Hour
	}
	b := &Broker{ackWait: o.AckWait, log: o.Logger, reconnected: make(chan struct{}, 1)}
	copts := []nats.Option{
		nats.Name(o.Name),
		nats.MaxReconnects(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			b.mu.Lock()
			b.lastOutage = time.Now()
			b.mu.Unlock()
			if err != nil {
				o.Logger.Warn("disconnected from NATS", "error", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			b.mu.Lock()
			b.lastOutage = time.Now()
			b.mu.Unlock()
			select {
			case b.reconnected <- struct{}{}:
			default:
			}
			o.Logger.Info("reconnected to NATS", "server", nc.ConnectedUrlRedacted())
		}),
	}
	var err error
	if o.URL == "" {
		if b.ns, err = startEmbedded(o); err != nil {
			return nil, err
		}
		copts = append(copts, nats.InProcessServer(b.ns))
	} else if o.Credentials != "" {
		copts = append(copts, nats.UserCredentials(o.Credentials))
	}
	if b.nc, err = nats.Connect(o.URL, copts...); err != nil {
		b.Close()
		return nil, fmt.Errorf("connect to NATS %s: %w", RedactURL(o.URL), err)
	}
	if err := b.setup(ctx, o); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

func startEmbedded(o Options) (*server.Server, error) {
	ns, err := server.NewServer(&server.Options{
		ServerName: "cleanroom-agent",
		JetStream:  true,
		StoreDir:   o.StoreDir,
		// In-process connections only: the embedded server is the single
		// agent's database, not a network service.
		DontListen: true,
		NoSigs:     true,
		NoLog:      true,
	})
	if err != nil {
		return nil, fmt.Errorf("embedded NATS: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		return nil, errors.New("embedded NATS did not start within 30s")
	}
	return ns, nil
}

func (b *Broker) setup(ctx context.Context, o Options) error {
	js, err := jetstream.New(b.nc)
	if err != nil {
		return err
	}
	b.js = js
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        QueueStream,
		Description: "cleanroom jobs waiting for an agent",
		Subjects:    []string{queueSubject},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
		// A webhook delivered twice (GitHub and GitLab retry) is one job.
		Duplicates: 10 * time.Minute,
	}); err != nil {
		return fmt.Errorf("JetStream stream %s: %w", QueueStream, err)
	}
	// Every agent writes the shared consumer's settings at start and the
	// last one wins: say so when this agent changes what others set.
	if c, err := js.Consumer(ctx, QueueStream, consumerName); err == nil {
		if info := c.CachedInfo(); info != nil && info.Config.AckWait != o.AckWait {
			o.Logger.Warn("the shared queue's ack_wait differs from this agent's; it is changed to this agent's, for every agent: configure all agents alike",
				"was", info.Config.AckWait, "now", o.AckWait)
		}
	}
	if b.cons, err = js.CreateOrUpdateConsumer(ctx, QueueStream, jetstream.ConsumerConfig{
		Durable:       consumerName,
		Description:   "every cleanroom agent pulls from this one consumer",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       o.AckWait,
		MaxDeliver:    -1, // attempts are counted in the job state, per policy
		MaxAckPending: 10000,
		Replicas:      o.Replicas,
	}); err != nil {
		return fmt.Errorf("JetStream consumer %s: %w", consumerName, err)
	}
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        LogStream,
		Description: "live logs of cleanroom jobs",
		Subjects:    []string{logSubject + ">"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		MaxAge:      o.LogRetention,
		Replicas:    o.Replicas,
	}); err != nil {
		return fmt.Errorf("JetStream stream %s: %w", LogStream, err)
	}
	if b.kv, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      StateBucket,
		Description: "state of every cleanroom job",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
	}); err != nil {
		return fmt.Errorf("JetStream key-value bucket %s: %w", StateBucket, err)
	}
	if b.files, err = js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket:      FileBucket,
		Description: "uploaded sources, logs, provenance, bundles and artifacts of cleanroom jobs",
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
	}); err != nil {
		return fmt.Errorf("JetStream object store %s: %w", FileBucket, err)
	}
	return nil
}

// Close disconnects, and stops the embedded server after its data is
// flushed to disk.
func (b *Broker) Close() {
	if b.nc != nil {
		b.nc.Drain()
		b.nc.Close()
	}
	if b.ns != nil {
		b.ns.Shutdown()
		b.ns.WaitForShutdown()
	}
}

// Connected reports whether the broker can reach JetStream now (/readyz).
func (b *Broker) Connected() bool { return b.nc != nil && b.nc.IsConnected() }

// Reconnected receives a value each time the connection to NATS comes
// back after an outage.
func (b *Broker) Reconnected() <-chan struct{} { return b.reconnected }

// SinceOutage is how long ago this agent last lost or regained its
// connection to NATS; a large value when it never did.
func (b *Broker) SinceOutage() time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.lastOutage.IsZero() {
		return time.Duration(1<<63 - 1)
	}
	return time.Since(b.lastOutage)
}

// Unreachable reports whether err means NATS could not be reached (as
// opposed to a refusal it answered with): the operation may be retried
// once the connection is back.
func (b *Broker) Unreachable(err error) bool {
	if err == nil {
		return false
	}
	return !b.Connected() || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrConnectionReconnecting) || errors.Is(err, nats.ErrDisconnected)
}

// Presence is what an agent last said about itself: which jobs it holds
// (running, or finished with a result still to record). Another agent
// that finds one of those jobs' leases expired knows the agent is alive
// and the queue was unreachable, and waits instead of running the job
// again.
type Presence struct {
	Agent string `json:"agent"`
	// Updated is when NATS stored the record (set by GetPresence).
	Updated time.Time `json:"-"`
	Jobs    []string  `json:"jobs"`
}

func presenceKey(agent string) string { return "agent." + hashKey(agent) }

// PutPresence records this agent's presence.
func (b *Broker) PutPresence(ctx context.Context, p Presence) error {
	data, _ := json.Marshal(p)
	_, err := b.kv.Put(ctx, presenceKey(p.Agent), data)
	return err
}

// GetPresence returns an agent's last presence.
func (b *Broker) GetPresence(ctx context.Context, agent string) (Presence, error) {
	e, err := b.kv.Get(ctx, presenceKey(agent))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Presence{}, ErrNotFound
	}
	if err != nil {
		return Presence{}, err
	}
	var p Presence
	err = json.Unmarshal(e.Value(), &p)
	// When NATS stored it, not the agent's clock: agents' clocks differ.
	p.Updated = e.Created()
	return p, err
}

// SlotHolder is a job holding one of a repository's run slots.
type SlotHolder struct {
	Job   string    `json:"job"`
	Since time.Time `json:"since"`
}

func slotsKey(repository string) string { return "slots." + hashKey(repository) }

// Slots returns the holders of a repository's run slots and the revision
// to compare-and-set against (0: none yet).
func (b *Broker) Slots(ctx context.Context, repository string) ([]SlotHolder, uint64, error) {
	e, err := b.kv.Get(ctx, slotsKey(repository))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	var hs []SlotHolder
	if err := json.Unmarshal(e.Value(), &hs); err != nil {
		return nil, e.Revision(), nil // corrupt: start afresh
	}
	return hs, e.Revision(), nil
}

// PutSlots writes a repository's slot holders if the revision is still
// rev (ErrConflict otherwise).
func (b *Broker) PutSlots(ctx context.Context, repository string, hs []SlotHolder, rev uint64) error {
	data, _ := json.Marshal(hs)
	var err error
	if rev == 0 {
		_, err = b.kv.Create(ctx, slotsKey(repository), data)
	} else {
		_, err = b.kv.Update(ctx, slotsKey(repository), data, rev)
	}
	if err != nil {
		var apiErr *jetstream.APIError
		if errors.Is(err, jetstream.ErrKeyExists) || errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
			return ErrConflict
		}
	}
	return err
}

// AckWait is the redelivery timeout of a job whose agent went silent.
func (b *Broker) AckWait() time.Duration { return b.ackWait }

// Submit records a new job and queues it. A source tarball, if any, is
// stored first, so no agent can pick up a job whose source is missing.
// dedup keys (DeliveryKey, BodyKey), when given, make a second submission
// carrying any of them a no-op (webhook redeliveries and replays); the job
// that was kept is returned.
func (b *Broker) Submit(ctx context.Context, job Job, tarball io.Reader, dedup ...string) (Job, error) {
	if !ValidID(job.ID) {
		return Job{}, fmt.Errorf("invalid job id %q", job.ID)
	}
	var keys []string
	for _, k := range dedup {
		if k != "" {
			keys = append(keys, k)
		}
	}
	previous := func() (Job, bool) {
		for _, k := range keys {
			if e, err := b.kv.Get(ctx, k); err == nil {
				if prev, _, err := b.Get(ctx, string(e.Value())); err == nil {
					return prev, true
				}
			}
		}
		return Job{}, false
	}
	if prev, ok := previous(); ok {
		return prev, nil
	}
	for _, k := range keys {
		if _, err := b.kv.Create(ctx, k, []byte(job.ID)); errors.Is(err, jetstream.ErrKeyExists) {
			// Lost a race with the same delivery.
			if prev, ok := previous(); ok {
				return prev, nil
			}
		} else if err != nil {
			return Job{}, err
		}
	}
	if tarball != nil {
		if _, err := b.files.Put(ctx, jetstream.ObjectMeta{Name: SourceObject(job.ID)}, tarball); err != nil {
			return Job{}, fmt.Errorf("store source tarball: %w", err)
		}
	}
	job.State = StateQueued
	data, _ := json.Marshal(job)
	if _, err := b.kv.Create(ctx, job.ID, data); errors.Is(err, jetstream.ErrKeyExists) {
		// This very job submitted again (from a spool, after an attempt
		// cut short by an outage): a job that is in keeps its state; one
		// whose queueing failed is queued now. The queue message's ID is
		// the job's, so it is never queued twice.
		prev, rev, err := b.Get(ctx, job.ID)
		if err != nil {
			return Job{}, fmt.Errorf("record job: %w", err)
		}
		if prev.State != StateQueued && !(prev.State == StateError && prev.Attempt == 0) {
			return prev, nil
		}
		if _, err := b.Put(ctx, job, rev); err != nil {
			return Job{}, fmt.Errorf("record job: %w", err)
		}
	} else if err != nil {
		return Job{}, fmt.Errorf("record job: %w", err)
	}
	if _, err := b.js.Publish(ctx, queueSubject, []byte(job.ID), jetstream.WithMsgID(job.ID)); err != nil {
		b.Update(ctx, job.ID, func(j *Job) error {
			j.State, j.Error, j.Finished = StateError, "could not queue the job: "+err.Error(), time.Now().UTC()
			return nil
		})
		return Job{}, fmt.Errorf("queue job: %w", err)
	}
	return job, nil
}

// DeliveryKey is the deduplication key of a forge's delivery ID: a
// redelivery within a day is the same job.
func DeliveryKey(id string) string { return "delivery." + hashKey(id) }

// BodyKey is the deduplication key of a webhook body's digest: the same
// signed body sent again under a new delivery ID (a replay) is the same
// job for as long as finished jobs are kept.
func BodyKey(digest string) string { return "replay." + hashKey(digest) }

// SourceObject is the object name of a job's uploaded source tarball.
func SourceObject(id string) string { return id + "/source.tar" }

// OutputObject is the object name of one of a job's outputs.
func OutputObject(id, name string) string { return id + "/out/" + name }

// Get returns a job and the revision to compare-and-set against.
func (b *Broker) Get(ctx context.Context, id string) (Job, uint64, error) {
	if !ValidID(id) {
		return Job{}, 0, ErrNotFound
	}
	e, err := b.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Job{}, 0, ErrNotFound
	}
	if err != nil {
		return Job{}, 0, err
	}
	var j Job
	if err := json.Unmarshal(e.Value(), &j); err != nil {
		return Job{}, 0, fmt.Errorf("job %s: corrupt state: %w", id, err)
	}
	return j, e.Revision(), nil
}

// Put writes a job if its stored revision is still rev.
func (b *Broker) Put(ctx context.Context, j Job, rev uint64) (uint64, error) {
	data, _ := json.Marshal(j)
	nrev, err := b.kv.Update(ctx, j.ID, data, rev)
	if err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
			return 0, ErrConflict
		}
		if errors.Is(err, jetstream.ErrKeyExists) {
			return 0, ErrConflict
		}
		return 0, err
	}
	return nrev, nil
}

// Update applies change to the current state of a job and writes it with
// compare-and-set, retrying on conflict. change may return an error to
// leave the job as it is.
func (b *Broker) Update(ctx context.Context, id string, change func(*Job) error) (Job, error) {
	for {
		j, rev, err := b.Get(ctx, id)
		if err != nil {
			return Job{}, err
		}
		if err := change(&j); err != nil {
			return j, err
		}
		if _, err := b.Put(ctx, j, rev); errors.Is(err, ErrConflict) {
			continue
		} else if err != nil {
			return Job{}, err
		}
		return j, nil
	}
}

// List returns up to limit jobs, newest first.
func (b *Broker) List(ctx context.Context, limit int) ([]Job, error) {
	lister, err := b.kv.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	var ids []string
	for k := range lister.Keys() {
		if ValidID(k) {
			ids = append(ids, k)
		}
	}
	slices.Sort(ids)
	slices.Reverse(ids)
	if limit > 0 && len(ids) > limit {
		ids = ids[:limit]
	}
	out := make([]Job, 0, len(ids))
	for _, id := range ids {
		j, _, err := b.Get(ctx, id)
		if err == nil {
			out = append(out, j)
		}
	}
	return out, nil
}

// ListPage returns up to limit jobs that keep accepts, newest first,
// starting after the job before (a previous page's cursor; "" for the
// first page). next is the cursor of the following page, "" when there
// is none.
func (b *Broker) ListPage(ctx context.Context, before string, limit int, keep func(Job) bool) (page []Job, next string, err error) {
	lister, err := b.kv.ListKeys(ctx)
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return []Job{}, "", nil
		}
		return nil, "", err
	}
	var ids []string
	for k := range lister.Keys() {
		if ValidID(k) && (before == "" || k < before) {
			ids = append(ids, k)
		}
	}
	slices.Sort(ids)
	slices.Reverse(ids)
	page = []Job{}
	for _, id := range ids {
		j, _, err := b.Get(ctx, id)
		if err != nil || (keep != nil && !keep(j)) {
			continue
		}
		if len(page) == limit {
			return page, page[len(page)-1].ID, nil
		}
		page = append(page, j)
	}
	return page, "", nil
}

// Watch sends the job's state each time it changes, until ctx ends.
func (b *Broker) Watch(ctx context.Context, id string) (<-chan Job, error) {
	w, err := b.kv.Watch(ctx, id, jetstream.UpdatesOnly())
	if err != nil {
		return nil, err
	}
	ch := make(chan Job, 1)
	go func() {
		defer close(ch)
		defer w.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil || e.Operation() != jetstream.KeyValuePut {
					continue
				}
				var j Job
				if json.Unmarshal(e.Value(), &j) != nil {
					continue
				}
				select {
				case ch <- j:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return ch, nil
}

// Delivery is one job handed to this agent by the queue.
type Delivery struct {
	ID string
	// Delivered counts how often JetStream has handed this message out.
	Delivered uint64
	msg       jetstream.Msg
}

// Next waits up to wait for a job. It returns nil, nil when none came.
func (b *Broker) Next(ctx context.Context, wait time.Duration) (*Delivery, error) {
	fctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	batch, err := b.cons.Fetch(1, jetstream.FetchContext(fctx))
	if err != nil {
		return nil, err
	}
	for msg := range batch.Messages() {
		d := &Delivery{ID: string(msg.Data()), msg: msg, Delivered: 1}
		if md, err := msg.Metadata(); err == nil {
			d.Delivered = md.NumDelivered
		}
		return d, nil
	}
	if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
		return nil, err
	}
	return nil, nil
}

// InProgress tells JetStream the job is still being worked on, resetting
// its AckWait.
func (d *Delivery) InProgress() error { return d.msg.InProgress() }

// Done removes the job from the queue, waiting for the server's
// confirmation so that a job is never both finished and redelivered.
func (d *Delivery) Done(ctx context.Context) error { return d.msg.DoubleAck(ctx) }

// Retry hands the job back to the queue for any agent, after delay.
func (d *Delivery) Retry(delay time.Duration) error {
	if delay <= 0 {
		return d.msg.Nak()
	}
	return d.msg.NakWithDelay(delay)
}

// QueueDepth is the number of jobs waiting and handed out but not
// finished.
func (b *Broker) QueueDepth(ctx context.Context) (waiting, running int, err error) {
	info, err := b.cons.Info(ctx)
	if err != nil {
		return 0, 0, err
	}
	return int(info.NumPending), info.NumAckPending, nil
}

// AppendLog adds output to a job's live log.
func (b *Broker) AppendLog(ctx context.Context, id string, p []byte) error {
	_, err := b.js.Publish(ctx, logSubject+id, p)
	return err
}

// EndLog marks the end of a job's live log: followers stop there.
func (b *Broker) EndLog(ctx context.Context, id, state string) error {
	msg := nats.NewMsg(logSubject + id)
	msg.Header.Set(endHeader, state)
	_, err := b.js.PublishMsg(ctx, msg)
	return err
}

// FollowLog calls fn with every chunk of a job's log from the start,
// waiting for new ones, until the end mark, ctx ends or fn fails.
// It returns the state named by the end mark.
func (b *Broker) FollowLog(ctx context.Context, id string, fn func([]byte) error) (string, error) {
	c, err := b.js.OrderedConsumer(ctx, LogStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{logSubject + id},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return "", err
	}
	it, err := c.Messages()
	if err != nil {
		return "", err
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return "", ctx.Err()
			}
			return "", err
		}
		if s := msg.Headers().Get(endHeader); s != "" {
			return s, nil
		}
		if err := fn(msg.Data()); err != nil {
			return "", err
		}
	}
}

// ReadLog writes the log a job has so far (every attempt, on whichever
// agent) to w, without waiting for more.
func (b *Broker) ReadLog(ctx context.Context, id string, w io.Writer) error {
	c, err := b.js.OrderedConsumer(ctx, LogStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{logSubject + id},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return err
	}
	for {
		batch, err := c.Fetch(256, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return err
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			if msg.Headers().Get(endHeader) == "" {
				if _, err := w.Write(msg.Data()); err != nil {
					return err
				}
			}
			if md, err := msg.Metadata(); err == nil && md.NumPending == 0 {
				return nil
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return err
		}
		if n == 0 {
			return nil
		}
	}
}

// Purge deletes what finished jobs left in JetStream once they are older
// than before (finished before it): the job's state, its files (outputs,
// kept log, uploaded source) and its live log. Queued and running jobs are
// never touched. Delivery records used to recognise webhook redeliveries
// are deleted after a day, those of webhook bodies with the jobs. It returns how many jobs it deleted. Several
// agents may purge at once: every deletion is idempotent.
func (b *Broker) Purge(ctx context.Context, before time.Time) (int, error) {
	lister, err := b.kv.ListKeys(ctx)
	if err != nil {
		return 0, err
	}
	var ids, deliveries, replays []string
	for k := range lister.Keys() {
		switch {
		case ValidID(k):
			ids = append(ids, k)
		case strings.HasPrefix(k, "delivery."):
			deliveries = append(deliveries, k)
		case strings.HasPrefix(k, "replay."):
			replays = append(replays, k)
		}
	}
	purged := map[string]bool{}
	for _, id := range ids {
		j, _, err := b.Get(ctx, id)
		if err != nil || !Terminal(j.State) || j.Finished.IsZero() || !j.Finished.Before(before) {
			continue
		}
		purged[id] = true
	}
	if len(purged) > 0 {
		objs, err := b.files.List(ctx)
		if err != nil && !errors.Is(err, jetstream.ErrNoObjectsFound) {
			return 0, err
		}
		for _, o := range objs {
			if id, _, ok := strings.Cut(o.Name, "/"); ok && purged[id] {
				if err := b.DeleteFile(ctx, o.Name); err != nil {
					return 0, err
				}
			}
		}
	}
	logs, err := b.js.Stream(ctx, LogStream)
	if err != nil {
		return 0, err
	}
	for id := range purged {
		if err := logs.Purge(ctx, jetstream.WithPurgeSubject(logSubject+id)); err != nil {
			return 0, err
		}
		if err := b.kv.Purge(ctx, id); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return 0, err
		}
	}
	dayAgo := time.Now().Add(-24 * time.Hour)
	for _, k := range deliveries {
		if e, err := b.kv.Get(ctx, k); err == nil && e.Created().Before(dayAgo) {
			b.kv.Purge(ctx, k)
		}
	}
	for _, k := range replays {
		if e, err := b.kv.Get(ctx, k); err == nil && e.Created().Before(before) {
			b.kv.Purge(ctx, k)
		}
	}
	return len(purged), nil
}

// PutFile stores one output of a job.
func (b *Broker) PutFile(ctx context.Context, name string, r io.Reader) (*jetstream.ObjectInfo, error) {
	return b.files.Put(ctx, jetstream.ObjectMeta{Name: name}, r)
}

// GetFile opens a stored file; the caller closes it.
func (b *Broker) GetFile(ctx context.Context, name string) (io.ReadCloser, int64, error) {
	r, err := b.files.Get(ctx, name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, 0, ErrNotFound
	}
	if err != nil {
		return nil, 0, err
	}
	info, err := r.Info()
	if err != nil {
		r.Close()
		return nil, 0, err
	}
	return r, int64(info.Size), nil
}

// DeleteFile removes a stored file; a missing one is not an error.
func (b *Broker) DeleteFile(ctx context.Context, name string) error {
	err := b.files.Delete(ctx, name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil
	}
	return err
}

// RedactURL hides the credentials of NATS URLs (a comma-separated list).
func RedactURL(u string) string {
	var out []string
	for _, part := range strings.Split(u, ",") {
		if at := strings.LastIndex(part, "@"); at >= 0 {
			if i := strings.Index(part, "://"); i >= 0 && i < at {
				part = part[:i+3] + "REDACTED" + part[at:]
			}
		}
		out = append(out, part)
	}
	return strings.Join(out, ",")
}
