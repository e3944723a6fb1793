package jobs

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

func openTest(t *testing.T, ackWait time.Duration) *Broker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b, err := Open(ctx, Options{StoreDir: t.TempDir(), AckWait: ackWait, Name: t.Name()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

func newJob() Job {
	return Job{ID: NewID(time.Now()), Source: Source{Kind: "git", Repository: "https://git.example.org/app.git", Ref: "refs/heads/main"}, Pipeline: "cleanroom.yaml", Trigger: Trigger{Kind: "api"}, Created: time.Now().UTC()}
}

func TestSubmitDeliverAck(t *testing.T) {
	b := openTest(t, 5*time.Second)
	ctx := context.Background()
	j, err := b.Submit(ctx, newJob(), strings.NewReader("tar bytes"), "")
	if err != nil {
		t.Fatal(err)
	}
	if j.State != StateQueued {
		t.Fatalf("state %q", j.State)
	}
	if w, _, _ := b.QueueDepth(ctx); w != 1 {
		t.Fatalf("queue depth %d, want 1", w)
	}
	d, err := b.Next(ctx, 2*time.Second)
	if err != nil || d == nil {
		t.Fatalf("next: %v %v", d, err)
	}
	if d.ID != j.ID || d.Delivered != 1 {
		t.Fatalf("delivery %+v", d)
	}
	r, size, err := b.GetFile(ctx, SourceObject(j.ID))
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(r)
	r.Close()
	if string(data) != "tar bytes" || size != 9 {
		t.Fatalf("source %q %d", data, size)
	}
	if err := d.Done(ctx); err != nil {
		t.Fatal(err)
	}
	if d2, err := b.Next(ctx, 300*time.Millisecond); err != nil || d2 != nil {
		t.Fatalf("acked job delivered again: %+v %v", d2, err)
	}
}

func TestRedeliveryAfterAckWait(t *testing.T) {
	b := openTest(t, time.Second)
	ctx := context.Background()
	j, err := b.Submit(ctx, newJob(), nil, "")
	if err != nil {
		t.Fatal(err)
	}
	d, _ := b.Next(ctx, 2*time.Second)
	if d == nil {
		t.Fatal("no delivery")
	}
	// Heartbeats hold the job past AckWait.
	for range 3 {
		time.Sleep(400 * time.Millisecond)
		if err := d.InProgress(); err != nil {
			t.Fatal(err)
		}
	}
	if d2, _ := b.Next(ctx, 300*time.Millisecond); d2 != nil {
		t.Fatal("job redelivered while its agent heartbeats")
	}
	// Silence: JetStream hands it out again.
	d2, err := b.Next(ctx, 3*time.Second)
	if err != nil || d2 == nil {
		t.Fatalf("no redelivery after AckWait: %v", err)
	}
	if d2.ID != j.ID || d2.Delivered != 2 {
		t.Fatalf("redelivery %+v", d2)
	}
}

func TestCompareAndSet(t *testing.T) {
	b := openTest(t, 5*time.Second)
	ctx := context.Background()
	j, _ := b.Submit(ctx, newJob(), nil, "")
	_, rev, err := b.Get(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	a := j
	a.State, a.Agent = StateRunning, "a"
	if _, err := b.Put(ctx, a, rev); err != nil {
		t.Fatal(err)
	}
	c := j
	c.State, c.Agent = StateRunning, "b"
	if _, err := b.Put(ctx, c, rev); !errors.Is(err, ErrConflict) {
		t.Fatalf("second claim with a stale revision: %v, want ErrConflict", err)
	}
	got, _, _ := b.Get(ctx, j.ID)
	if got.Agent != "a" {
		t.Fatalf("agent %q", got.Agent)
	}
	// Update retries on conflict: 20 concurrent increments all land.
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := b.Update(ctx, j.ID, func(j *Job) error { j.Attempt++; return nil }); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	got, _, _ = b.Get(ctx, j.ID)
	if got.Attempt != 20 {
		t.Fatalf("attempt %d after 20 concurrent updates", got.Attempt)
	}
	if _, _, err := b.Get(ctx, "../etc"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("invalid id: %v", err)
	}
}

func TestDeliveryDedup(t *testing.T) {
	b := openTest(t, 5*time.Second)
	ctx := context.Background()
	first, err := b.Submit(ctx, newJob(), nil, DeliveryKey("delivery-1"))
	if err != nil {
		t.Fatal(err)
	}
	second, err := b.Submit(ctx, newJob(), nil, DeliveryKey("delivery-1"))
	if err != nil {
		t.Fatal(err)
	}
	if second.ID != first.ID {
		t.Fatalf("redelivered webhook made a second job %s (first %s)", second.ID, first.ID)
	}
	list, _ := b.List(ctx, 0)
	if len(list) != 1 {
		t.Fatalf("%d jobs", len(list))
	}
}

func TestFollowLog(t *testing.T) {
	b := openTest(t, 5*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	id := NewID(time.Now())
	b.AppendLog(ctx, id, []byte("one\n"))
	var got bytes.Buffer
	done := make(chan string)
	go func() {
		state, err := b.FollowLog(ctx, id, func(p []byte) error { got.Write(p); return nil })
		if err != nil {
			t.Error(err)
		}
		done <- state
	}()
	time.Sleep(200 * time.Millisecond)
	b.AppendLog(ctx, id, []byte("two\n"))
	b.EndLog(ctx, id, StateSucceeded)
	if s := <-done; s != StateSucceeded {
		t.Fatalf("end state %q", s)
	}
	if got.String() != "one\ntwo\n" {
		t.Fatalf("log %q", got.String())
	}
}

func TestWatch(t *testing.T) {
	b := openTest(t, 5*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	j, _ := b.Submit(ctx, newJob(), nil, "")
	ch, err := b.Watch(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	b.Update(ctx, j.ID, func(j *Job) error { j.CancelRequested = true; return nil })
	select {
	case got := <-ch:
		if !got.CancelRequested {
			t.Fatalf("%+v", got)
		}
	case <-ctx.Done():
		t.Fatal("no update seen")
	}
}

func TestPurgeFinishedJobs(t *testing.T) {
	b := openTest(t, 5*time.Second)
	ctx := context.Background()
	old := time.Now().Add(-48 * time.Hour)
	submit := func(state string, finished time.Time) string {
		t.Helper()
		j, err := b.Submit(ctx, newJob(), strings.NewReader("source"), "")
		if err != nil {
			t.Fatal(err)
		}
		b.PutFile(ctx, OutputObject(j.ID, "job.log"), strings.NewReader("log"))
		b.AppendLog(ctx, j.ID, []byte("line\n"))
		if _, err := b.Update(ctx, j.ID, func(j *Job) error { j.State, j.Finished = state, finished; return nil }); err != nil {
			t.Fatal(err)
		}
		return j.ID
	}
	gone := submit(StateSucceeded, old)
	recent := submit(StateFailed, time.Now())
	running := submit(StateRunning, time.Time{})
	n, err := b.Purge(ctx, time.Now().Add(-24*time.Hour))
	if err != nil || n != 1 {
		t.Fatalf("purged %d, %v; want 1", n, err)
	}
	if _, _, err := b.Get(ctx, gone); !errors.Is(err, ErrNotFound) {
		t.Errorf("old finished job still there: %v", err)
	}
	for _, name := range []string{SourceObject(gone), OutputObject(gone, "job.log")} {
		if _, _, err := b.GetFile(ctx, name); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s still stored: %v", name, err)
		}
	}
	var rest bytes.Buffer
	b.ReadLog(ctx, gone, &rest)
	if rest.Len() != 0 {
		t.Errorf("live log of a purged job: %q", rest.String())
	}
	for _, id := range []string{recent, running} {
		if _, _, err := b.Get(ctx, id); err != nil {
			t.Errorf("job %s was purged: %v", id, err)
		}
		if _, _, err := b.GetFile(ctx, OutputObject(id, "job.log")); err != nil {
			t.Errorf("job %s lost its files: %v", id, err)
		}
	}
}

func TestDifferingAckWaitIsReported(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	b, err := Open(ctx, Options{StoreDir: dir, AckWait: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	var logs bytes.Buffer
	log := hclog.New(&hclog.LoggerOptions{Output: &logs})
	b, err = Open(ctx, Options{StoreDir: dir, AckWait: 9 * time.Second, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if !strings.Contains(logs.String(), "ack_wait differs") || b.AckWait() != 9*time.Second {
		t.Fatalf("log: %s", logs.String())
	}
}

func TestPresence(t *testing.T) {
	b := openTest(t, 5*time.Second)
	ctx := context.Background()
	if _, err := b.GetPresence(ctx, "a1"); err != ErrNotFound {
		t.Fatalf("no presence yet: %v", err)
	}
	if err := b.PutPresence(ctx, Presence{Agent: "a1", Jobs: []string{"j1"}}); err != nil {
		t.Fatal(err)
	}
	p, err := b.GetPresence(ctx, "a1")
	if err != nil || p.Agent != "a1" || len(p.Jobs) != 1 || p.Jobs[0] != "j1" || time.Since(p.Updated) > 5*time.Second || p.Updated.After(time.Now().Add(time.Second)) {
		t.Fatalf("presence %+v %v", p, err)
	}
}
