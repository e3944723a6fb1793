package egress

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// deadlineWriter sets a fresh write deadline before every write, so that a
// client that stops reading cannot pin a connection (and its upstream)
// forever, while a slow but steady reader of a huge body is never cut.
type deadlineWriter struct {
	conn net.Conn
	idle time.Duration
}

func (w deadlineWriter) Write(p []byte) (int, error) {
	_ = w.conn.SetWriteDeadline(time.Now().Add(w.idle))
	return w.conn.Write(p)
}

// writeText writes a complete short text/plain response. Every message the
// proxy itself produces goes through here, prefixed "cleanroom: " so that
// a user reading build output knows who answered.
func writeText(bw *bufio.Writer, method string, status int, msg string, closeConn bool) error {
	body := "cleanroom: " + strings.TrimPrefix(msg, "cleanroom: ") + "\n"
	fmt.Fprintf(bw, "HTTP/1.1 %d %s\r\n", status, http.StatusText(status))
	bw.WriteString("Content-Type: text/plain; charset=utf-8\r\n")
	bw.WriteString("Cache-Control: no-store\r\n")
	bw.WriteString("X-Content-Type-Options: nosniff\r\n")
	bw.WriteString("Content-Length: " + strconv.Itoa(len(body)) + "\r\n")
	if closeConn {
		bw.WriteString("Connection: close\r\n")
	}
	bw.WriteString("\r\n")
	if method != http.MethodHead {
		bw.WriteString(body)
	}
	return bw.Flush()
}

// hopHeaders are meaningful only for a single connection and must not be
// forwarded in either direction (RFC 9110 §7.6.1). Proxy-Authorization is
// among them so that no credential for this proxy ever leaks upstream.
var hopHeaders = []string{
	"Connection",
	"Proxy-Connection",
	"Keep-Alive",
	"Proxy-Authenticate",
	"Proxy-Authorization",
	"Te",
	"Trailer",
	"Transfer-Encoding",
	"Upgrade",
}

// removeHopHeaders deletes hop-by-hop headers, including every header the
// Connection header names (which an attacker could otherwise use to smuggle
// per-hop semantics through).
func removeHopHeaders(h http.Header) {
	for _, v := range h.Values("Connection") {
		for f := range strings.SplitSeq(v, ",") {
			if f = strings.TrimSpace(f); f != "" {
				h.Del(f)
			}
		}
	}
	for _, k := range hopHeaders {
		h.Del(k)
	}
}

// statusLine renders the upstream status with a sanitised reason phrase.
func statusLine(resp *http.Response) string {
	reason := strings.TrimSpace(strings.TrimPrefix(resp.Status, strconv.Itoa(resp.StatusCode)))
	if reason == "" || hasCTL(reason) {
		reason = http.StatusText(resp.StatusCode)
	}
	return fmt.Sprintf("HTTP/1.1 %03d %s\r\n", resp.StatusCode, reason)
}

// bodyAllowed reports whether a response to method with status may carry a
// body (RFC 9112 §6.3).
func bodyAllowed(method string, status int) bool {
	return method != http.MethodHead && status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}
