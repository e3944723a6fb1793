package egress

import (
	"bytes"
	"crypto/sha256"
	"io"
	"net"
	"testing"
	"time"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (a, b net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		acc <- c
	}()
	a, err = net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b = <-acc
	if b == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// runSplice splices the proxy-side ends of a client pair and an upstream
// pair and returns the far ends and the result channel.
func runSplice(t *testing.T, idle time.Duration) (client, upstream net.Conn, res chan [2]int64) {
	client, pc := tcpPair(t)
	pu, upstream := tcpPair(t)
	res = make(chan [2]int64, 1)
	go func() {
		out, in := splice(pc, pu, idle)
		res <- [2]int64{out, in}
	}()
	return client, upstream, res
}

// Both directions carry their bytes intact, and a half-close is passed on.
func TestSpliceCopiesBothWays(t *testing.T) {
	client, upstream, res := runSplice(t, 5*time.Second)
	down := bytes.Repeat([]byte("0123456789abcdef"), 3<<20/16+7) // over several chunks
	up := []byte("request bytes")
	go func() {
		upstream.Write(down)
		upstream.(*net.TCPConn).CloseWrite()
	}()
	go func() {
		client.Write(up)
		client.(*net.TCPConn).CloseWrite()
	}()
	gotUp, err := io.ReadAll(upstream)
	if err != nil || !bytes.Equal(gotUp, up) {
		t.Fatalf("upstream read %q, %v", gotUp, err)
	}
	gotDown, err := io.ReadAll(client)
	if err != nil || sha256.Sum256(gotDown) != sha256.Sum256(down) {
		t.Fatalf("client read %d bytes (want %d), %v", len(gotDown), len(down), err)
	}
	select {
	case r := <-res:
		if r[0] != int64(len(up)) || r[1] != int64(len(down)) {
			t.Errorf("counted out %d in %d, want %d %d", r[0], r[1], len(up), len(down))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("splice did not end after both half-closes")
	}
}

// A tunnel with no traffic at all is cut after the idle timeout.
func TestSpliceIdleCut(t *testing.T) {
	client, _, res := runSplice(t, 200*time.Millisecond)
	start := time.Now()
	select {
	case <-res:
	case <-time.After(5 * time.Second):
		t.Fatal("an idle tunnel was never cut")
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("cut after %s, before the idle timeout", d)
	}
	client.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := client.Read(make([]byte, 1)); err == nil {
		t.Error("client connection still open after the cut")
	}
}

// One direction moving keeps the tunnel alive while the other is quiet.
func TestSpliceOneQuietDirectionKept(t *testing.T) {
	client, upstream, res := runSplice(t, 200*time.Millisecond)
	go io.Copy(io.Discard, client)
	for range 12 { // 600 ms of a trickle, three idle timeouts
		if _, err := upstream.Write([]byte("x")); err != nil {
			t.Fatalf("tunnel cut while data was moving: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	select {
	case <-res:
		t.Fatal("tunnel cut while data was moving")
	default:
	}
	upstream.Close()
	client.Close()
	select {
	case r := <-res:
		if r[1] != 12 {
			t.Errorf("in = %d, want 12", r[1])
		}
	case <-time.After(5 * time.Second):
		t.Fatal("splice did not end")
	}
}
