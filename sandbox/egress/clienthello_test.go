package egress

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"net"
	"strings"
	"testing"
)

// captureClientHello returns the bytes crypto/tls sends as its first
// flight for the given server name.
func captureClientHello(t testing.TB, serverName string) []byte {
	t.Helper()
	c1, c2 := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		tls.Client(c1, &tls.Config{ServerName: serverName, InsecureSkipVerify: true}).Handshake()
	}()
	raw, _, err := readClientHello(c2)
	c2.Close()
	c1.Close()
	<-done
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestReadClientHelloReal(t *testing.T) {
	for _, name := range []string{"example.com", "xn--bcher-kva.example", ""} {
		raw := captureClientHello(t, name)
		got, ch, err := readClientHello(bytes.NewReader(raw))
		if err != nil {
			t.Fatalf("%q: %v", name, err)
		}
		if !bytes.Equal(got, raw) {
			t.Error("raw bytes not returned intact")
		}
		if ch.hasSNI != (name != "") || ch.serverName != name || ch.hasECH {
			t.Errorf("%q: %+v", name, ch)
		}
	}
}

// buildHello assembles a ClientHello record from extensions.
func buildHello(exts ...[]byte) []byte {
	var body []byte
	body = append(body, 3, 3)
	body = append(body, make([]byte, 32)...)
	body = append(body, 0)                // session id
	body = append(body, 0, 2, 0x13, 0x01) // one suite
	body = append(body, 1, 0)             // null compression
	var ext []byte
	for _, e := range exts {
		ext = append(ext, e...)
	}
	body = binary.BigEndian.AppendUint16(body, uint16(len(ext)))
	body = append(body, ext...)
	msg := []byte{1, byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))}
	msg = append(msg, body...)
	rec := []byte{0x16, 3, 1, byte(len(msg) >> 8), byte(len(msg))}
	return append(rec, msg...)
}

func ext(typ uint16, data []byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, typ)
	b = binary.BigEndian.AppendUint16(b, uint16(len(data)))
	return append(b, data...)
}

func sniExt(names ...string) []byte {
	var list []byte
	for _, n := range names {
		list = append(list, 0)
		list = binary.BigEndian.AppendUint16(list, uint16(len(n)))
		list = append(list, n...)
	}
	return ext(0, append(binary.BigEndian.AppendUint16(nil, uint16(len(list))), list...))
}

func TestReadClientHelloCrafted(t *testing.T) {
	ok := buildHello(sniExt("example.com"))
	if _, ch, err := readClientHello(bytes.NewReader(ok)); err != nil || ch.serverName != "example.com" {
		t.Fatalf("%+v %v", ch, err)
	}
	// Split across two records.
	msg := ok[5:]
	split := append([]byte{0x16, 3, 1, 0, 10}, msg[:10]...)
	split = append(split, 0x16, 3, 1, byte((len(msg)-10)>>8), byte(len(msg)-10))
	split = append(split, msg[10:]...)
	if _, ch, err := readClientHello(bytes.NewReader(split)); err != nil || ch.serverName != "example.com" {
		t.Errorf("fragmented: %+v %v", ch, err)
	}
	if _, ch, err := readClientHello(bytes.NewReader(buildHello(sniExt("a.example"), ext(0xfe0d, []byte{1, 2})))); err != nil || !ch.hasECH {
		t.Errorf("ECH: %+v %v", ch, err)
	}
	if _, ch, err := readClientHello(bytes.NewReader(buildHello(ext(10, []byte{0, 0})))); err != nil || ch.hasSNI {
		t.Errorf("no SNI: %+v %v", ch, err)
	}

	bad := map[string][]byte{
		"empty":            nil,
		"http":             []byte("GET / HTTP/1.1\r\n\r\n"),
		"sslv2":            {0x80, 0x2e, 0x01, 0x03, 0x01},
		"short header":     {0x16, 3, 1},
		"zero length":      {0x16, 3, 1, 0, 0},
		"oversized record": {0x16, 3, 1, 0x40, 0x01},
		"truncated record": ok[:len(ok)-3],
		"two SNI ext":      buildHello(sniExt("a.example"), sniExt("b.example")),
		"two host names":   buildHello(sniExt("a.example", "b.example")),
		"empty SNI list":   buildHello(ext(0, []byte{0, 0})),
		"empty host name":  buildHello(sniExt("")),
		"dup extension":    buildHello(ext(10, nil), ext(10, nil)),
		"server hello":     append([]byte{0x16, 3, 3, 0, 4}, 2, 0, 0, 0),
		"trailing data":    append(append([]byte{0x16, 3, 1}, byte((len(ok)-5+2)>>8), byte(len(ok)-5+2)), append(append([]byte{}, ok[5:]...), 0, 0)...),
	}
	for name, b := range bad {
		if _, ch, err := readClientHello(bytes.NewReader(b)); err == nil {
			t.Errorf("%s: accepted: %+v", name, ch)
		} else if !errors.Is(err, errNotTLS) {
			t.Errorf("%s: error %v does not wrap errNotTLS", name, err)
		}
	}
}

func TestCheckSNI(t *testing.T) {
	name := target{host: "example.com", port: 443}
	_, ip, _, _ := NormalizeHost("127.0.0.1")
	lit := target{host: "127.0.0.1", ip: ip, isIP: true, port: 443}
	for _, c := range []struct {
		t    target
		ch   clientHello
		okay bool
	}{
		{name, clientHello{serverName: "example.com", hasSNI: true}, true},
		{name, clientHello{serverName: "EXAMPLE.com.", hasSNI: true}, true},
		{name, clientHello{serverName: "other.test", hasSNI: true}, false},
		{name, clientHello{}, false},
		{name, clientHello{serverName: "example.com", hasSNI: true, hasECH: true}, false},
		{name, clientHello{serverName: "127.0.0.1", hasSNI: true}, false},
		{lit, clientHello{}, true},
		{lit, clientHello{serverName: "127.0.0.1", hasSNI: true}, true},
		{lit, clientHello{serverName: "example.com", hasSNI: true}, false},
	} {
		err := checkSNI(c.t, c.ch)
		if (err == nil) != c.okay {
			t.Errorf("checkSNI(%v, %+v) = %v", c.t.host, c.ch, err)
		}
		if err != nil && !strings.Contains(err.Error(), "ClientHello") {
			t.Errorf("unhelpful error %v", err)
		}
	}
}
