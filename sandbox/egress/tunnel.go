package egress

import (
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"time"
)

// spliceChunk is the most one direction of a tunnel moves between two
// progress marks. Each chunk is one io.Copy between the raw connections,
// which for two *net.TCPConn is splice(2) on Linux: the bytes go from
// socket to socket through a kernel pipe and never enter the process.
// A chunk also ends at a read deadline of half the idle timeout, so a
// trickle marks progress in time too.
const spliceChunk = 4 << 20

// splice copies bytes both ways between the step and the upstream until
// both directions have ended, and returns the byte counts. An EOF in one
// direction is passed on as a half-close so protocols that rely on it keep
// working. A tunnel is cut when neither direction has moved a byte for
// idle — one quiet direction alone is fine (a download with nothing to
// send) — and when either side fails.
func splice(client, upstream net.Conn, idle time.Duration) (out, in int64) {
	var last atomic.Int64
	touch := func() { last.Store(time.Now().UnixNano()) }
	touch()
	quiet := func() bool { return time.Since(time.Unix(0, last.Load())) >= idle }
	_ = client.SetDeadline(time.Time{})
	_ = upstream.SetDeadline(time.Time{})

	// The watchdog cuts the tunnel once neither side has moved for idle,
	// including a direction stuck writing to a peer that does not read.
	stop := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		t := time.NewTicker(max(idle/8, 5*time.Millisecond))
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				if quiet() {
					client.Close()
					upstream.Close()
					return
				}
			}
		}
	}()

	done := make(chan error, 2)
	pipe := func(dst, src net.Conn, n *int64) {
		var err error
		defer func() {
			if r := recover(); r != nil {
				err = errors.New("panic in tunnel")
			}
			done <- err
		}()
		mark := max(idle/2, 5*time.Millisecond)
		for {
			// A read deadline interrupts splice(2) only while it waits
			// for input, before bytes enter the pipe, so none are lost.
			_ = src.SetReadDeadline(time.Now().Add(mark))
			lr := &io.LimitedReader{R: src, N: spliceChunk}
			m, cerr := io.Copy(dst, lr)
			*n += m
			if m > 0 {
				touch()
			}
			if errors.Is(cerr, os.ErrDeadlineExceeded) && !quiet() {
				continue
			}
			if cerr != nil {
				err = cerr
				return
			}
			if lr.N > 0 { // src ended before the chunk did: EOF
				closeWrite(dst)
				return
			}
		}
	}
	go pipe(upstream, client, &out)
	go pipe(client, upstream, &in)
	if err := <-done; err != nil {
		// One side failed: unblock the other direction now.
		client.Close()
		upstream.Close()
	}
	<-done
	close(stop)
	<-watched
	client.Close()
	upstream.Close()
	return out, in
}

// closeWrite half-closes c if it supports it, else closes it.
func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		return
	}
	c.Close()
}
