package egress

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Bodies are streamed through one fixed-size pooled buffer per direction;
// nothing is ever read whole into memory, so a multi-GiB download costs the
// runner the same 64 KiB as a small one. (64 KiB rather than 32 halves the
// syscalls per byte; larger buys little more.)
const copyBufSize = 256 << 10

var copyBufs = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

// copyStream copies src to dst (and to h, if not nil), calling progress
// after each chunk. It returns the bytes written to dst and which side
// failed: readErr is nil when src reached EOF.
//
// With a hash sink the copy is pipelined: h runs in its own goroutine on
// the chunk just read while this one writes it to dst and reads the next,
// so hashing overlaps the socket copies instead of adding to them (on the
// forwarding path SHA-256 costs about as much CPU as the two copies
// together). Two pooled buffers circulate, so memory stays fixed.
func copyStream(dst io.Writer, src io.Reader, h io.Writer, progress func()) (n int64, readErr, writeErr error) {
	if h == nil {
		return copySerial(dst, src, progress)
	}
	free := make(chan *[]byte, 2)
	for range 2 {
		free <- copyBufs.Get().(*[]byte)
	}
	work := make(chan []byte, 1)
	hashed := make(chan struct{})
	go func() {
		defer close(hashed)
		for b := range work {
			h.Write(b)
			bp := b[:cap(b)]
			free <- &bp
		}
	}()
	defer func() {
		close(work)
		<-hashed // h must be complete (or abandoned) before the caller finishes it
		for range 2 {
			copyBufs.Put(<-free)
		}
	}()
	for {
		bp := <-free
		buf := *bp
		nr, rerr := src.Read(buf)
		if nr > 0 {
			work <- buf[:nr] // the hasher and the write below only read buf
			nw, werr := dst.Write(buf[:nr])
			n += int64(nw)
			if werr == nil && nw != nr {
				werr = io.ErrShortWrite
			}
			if werr != nil {
				return n, nil, werr
			}
			if progress != nil {
				progress()
			}
		} else {
			free <- bp
		}
		if rerr == io.EOF {
			return n, nil, nil
		}
		if rerr != nil {
			return n, rerr, nil
		}
	}
}

// copySerial is copyStream without a sink.
func copySerial(dst io.Writer, src io.Reader, progress func()) (n int64, readErr, writeErr error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	for {
		nr, rerr := src.Read(buf)
		if nr > 0 {
			nw, werr := dst.Write(buf[:nr])
			n += int64(nw)
			if werr == nil && nw != nr {
				werr = io.ErrShortWrite
			}
			if werr != nil {
				return n, nil, werr
			}
			if progress != nil {
				progress()
			}
		}
		if rerr == io.EOF {
			return n, nil, nil
		}
		if rerr != nil {
			return n, rerr, nil
		}
	}
}

// clientBody wraps a request body read from the client connection. It
// refreshes the read deadline before every read (a stalled upload is cut
// after the idle timeout, a slow steady one is not) and counts bytes. Close
// does not drain: the connection loop decides how much of an unread body it
// is willing to skip.
type clientBody struct {
	r        io.Reader
	conn     net.Conn
	idle     time.Duration
	n        atomic.Int64 // read by the handler while net/http may still be sending
	progress func()
	eof      atomic.Bool
}

func (b *clientBody) Read(p []byte) (int, error) {
	_ = b.conn.SetReadDeadline(time.Now().Add(b.idle))
	n, err := b.r.Read(p)
	b.n.Add(int64(n))
	if n > 0 && b.progress != nil {
		b.progress()
	}
	if err == io.EOF {
		b.eof.Store(true)
	}
	return n, err
}

func (b *clientBody) Close() error { return nil }

// stallGuard cancels an upstream exchange that makes no progress for the
// idle timeout, in either direction. Upstream bodies have no deadlines of
// their own once net/http owns the connection, so this is what stops a
// silent upstream from holding a client connection slot indefinitely.
type stallGuard struct {
	t    *time.Timer
	idle time.Duration
}

func newStallGuard(idle time.Duration, cancel func()) *stallGuard {
	return &stallGuard{t: time.AfterFunc(idle, cancel), idle: idle}
}

func (g *stallGuard) touch() { g.t.Reset(g.idle) }
func (g *stallGuard) stop()  { g.t.Stop() }
