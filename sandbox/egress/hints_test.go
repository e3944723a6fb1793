package egress

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

// A client rejecting the inspection CA with a bad_record_mac alert gets the
// CA hint, not only the TLS error.
func TestHandshakeRefusalBadRecordMAC(t *testing.T) {
	got := handshakeRefusal("example.org:443", errors.New("local error: tls: bad record MAC"))
	want := "TLS inspection of example.org:443 refused: the client does not trust the run's inspection CA: it pins certificates or ignores SSL_CERT_FILE/the system bundle; point it at $SSL_CERT_FILE or set egress.inspect: false for this step (local error: tls: bad record MAC); no unrecorded tunnel is offered instead"
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

// busybox wget sends "GET https://…" to the proxy: the answer says the
// client cannot CONNECT, and does not tell it to set HTTPS_PROXY.
func TestHTTPSWithoutConnectHint(t *testing.T) {
	p := startProxy(t, Config{}, "deps.test")
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET https://deps.test/x HTTP/1.1\r\nHost: deps.test\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), httpsWithoutConnect) || strings.Contains(string(body), "set HTTPS_PROXY") {
		t.Errorf("status %d, body %q", resp.StatusCode, body)
	}
}
