package egress

import (
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"time"
)

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

	done := make(chan error, 2)
	pipe := func(dst, src net.Conn, n *int64) {
		var err error
		defer func() {
			if r := recover(); r != nil {
				err = errors.New("panic in tunnel")
			}
			done <- err
		}()
		bp := copyBufs.Get().(*[]byte)
		defer copyBufs.Put(bp)
		buf := *bp
		for {
			_ = src.SetReadDeadline(time.Now().Add(idle))
			nr, rerr := src.Read(buf)
			if nr > 0 {
				touch()
				_ = dst.SetWriteDeadline(time.Now().Add(idle))
				nw, werr := dst.Write(buf[:nr])
				*n += int64(nw)
				if werr != nil {
					err = werr
					return
				}
				touch()
			}
			if rerr == nil {
				continue
			}
			if errors.Is(rerr, os.ErrDeadlineExceeded) && !quiet() {
				continue
			}
			if errors.Is(rerr, io.EOF) {
				closeWrite(dst)
				return
			}
			err = rerr
			return
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
