package egress

import (
	"errors"
	"fmt"
	"io"
)

// The first bytes of every CONNECT tunnel must be a TLS ClientHello whose
// server name matches the CONNECT host. Without this check an allowed
// CONNECT target is a generic TCP pipe that could carry any protocol, or TLS
// with a server name of another site. The check does NOT stop domain
// fronting: inside an opaque tunnel the HTTP Host header is encrypted, so a
// client can send the allowed SNI and then ask the server (a CDN hosting
// many sites) for another virtual host. Only TLS inspection sees that
// Host, and refuses a mismatch (421); see SECURITY.md.
// The parser below is deliberately small and bounds-checked everywhere: it
// reads attacker-controlled bytes and is fuzzed.

const (
	recordTypeHandshake    = 0x16
	handshakeClientHello   = 0x01
	extServerName          = 0x0000
	extEncryptedClientHelo = 0xfe0d
	maxRecordLen           = 1 << 14
	// maxClientHello bounds the bytes buffered before the check; real
	// ClientHellos, even with post-quantum key shares, are a few KiB.
	maxClientHello = 64 << 10
)

var errNotTLS = errors.New("not a TLS ClientHello")

// clientHello is what the tunnel check needs from a ClientHello.
type clientHello struct {
	serverName string
	hasSNI     bool
	hasECH     bool
}

// readClientHello reads TLS handshake records from r until it holds one
// complete ClientHello message (which may span records), and returns the
// raw bytes read, to be forwarded unchanged once the check passes.
func readClientHello(r io.Reader) (raw []byte, ch clientHello, err error) {
	var msg []byte
	for {
		var hdr [5]byte
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			if len(raw) == 0 && errors.Is(err, io.EOF) {
				return raw, ch, fmt.Errorf("%w: no data", errNotTLS)
			}
			return raw, ch, fmt.Errorf("%w: %v", errNotTLS, err)
		}
		if hdr[0] != recordTypeHandshake || hdr[1] != 3 || hdr[2] > 4 {
			return raw, ch, fmt.Errorf("%w: first bytes %q", errNotTLS, hdr[:])
		}
		n := int(hdr[3])<<8 | int(hdr[4])
		if n == 0 || n > maxRecordLen {
			return raw, ch, fmt.Errorf("%w: bad record length %d", errNotTLS, n)
		}
		if len(raw)+len(hdr)+n > maxClientHello {
			return raw, ch, fmt.Errorf("%w: ClientHello larger than %d bytes", errNotTLS, maxClientHello)
		}
		raw = append(raw, hdr[:]...)
		start := len(raw)
		raw = append(raw, make([]byte, n)...)
		if got, err := io.ReadFull(r, raw[start:]); err != nil {
			return raw[:start+got], ch, fmt.Errorf("%w: truncated record: %v", errNotTLS, err)
		}
		msg = append(msg, raw[start:]...)
		if len(msg) < 4 {
			continue
		}
		if msg[0] != handshakeClientHello {
			return raw, ch, fmt.Errorf("%w: handshake type %d", errNotTLS, msg[0])
		}
		mlen := int(msg[1])<<16 | int(msg[2])<<8 | int(msg[3])
		if mlen > maxClientHello {
			return raw, ch, fmt.Errorf("%w: ClientHello length %d", errNotTLS, mlen)
		}
		if len(msg) < 4+mlen {
			continue
		}
		if len(msg) > 4+mlen {
			return raw, ch, fmt.Errorf("%w: data after the ClientHello", errNotTLS)
		}
		ch, err = parseClientHello(msg[4:])
		return raw, ch, err
	}
}

// reader is a bounds-checked cursor over a byte slice; every read fails
// cleanly past the end instead of panicking.
type reader struct {
	b   []byte
	bad bool
}

func (r *reader) bytes(n int) []byte {
	if r.bad || n < 0 || n > len(r.b) {
		r.bad = true
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u8() int {
	v := r.bytes(1)
	if v == nil {
		return 0
	}
	return int(v[0])
}

func (r *reader) u16() int {
	v := r.bytes(2)
	if v == nil {
		return 0
	}
	return int(v[0])<<8 | int(v[1])
}

// vec reads a vector with an lenBytes-byte length prefix.
func (r *reader) vec(lenBytes int) *reader {
	var n int
	if lenBytes == 1 {
		n = r.u8()
	} else {
		n = r.u16()
	}
	v := r.bytes(n)
	return &reader{b: v, bad: r.bad}
}

// parseClientHello parses a ClientHello handshake body (after the 4-byte
// handshake header). Duplicate extensions and more than one host_name are
// rejected: TLS forbids them, and a server might pick a different one than
// the proxy checked.
func parseClientHello(b []byte) (clientHello, error) {
	var ch clientHello
	r := &reader{b: b}
	r.bytes(2)  // legacy_version
	r.bytes(32) // random
	if sid := r.vec(1); len(sid.b) > 32 {
		return ch, fmt.Errorf("%w: session id too long", errNotTLS)
	}
	suites := r.vec(2)
	if len(suites.b) < 2 || len(suites.b)%2 != 0 {
		return ch, fmt.Errorf("%w: bad cipher suites", errNotTLS)
	}
	if comp := r.vec(1); len(comp.b) < 1 {
		return ch, fmt.Errorf("%w: bad compression methods", errNotTLS)
	}
	if r.bad {
		return ch, fmt.Errorf("%w: truncated", errNotTLS)
	}
	if len(r.b) == 0 {
		return ch, nil // no extensions (pre-TLS 1.2 style): no SNI
	}
	exts := r.vec(2)
	if r.bad || len(r.b) != 0 {
		return ch, fmt.Errorf("%w: bad extensions block", errNotTLS)
	}
	seen := map[int]bool{}
	for len(exts.b) > 0 {
		typ := exts.u16()
		data := exts.vec(2)
		if exts.bad {
			return ch, fmt.Errorf("%w: truncated extension", errNotTLS)
		}
		if seen[typ] {
			return ch, fmt.Errorf("%w: duplicate extension %d", errNotTLS, typ)
		}
		seen[typ] = true
		switch typ {
		case extServerName:
			name, err := parseServerName(data)
			if err != nil {
				return ch, err
			}
			ch.serverName, ch.hasSNI = name, true
		case extEncryptedClientHelo:
			ch.hasECH = true
		}
	}
	return ch, nil
}

// parseServerName parses the server_name extension (RFC 6066 §3).
func parseServerName(r *reader) (string, error) {
	list := r.vec(2)
	if r.bad || len(r.b) != 0 || len(list.b) == 0 {
		return "", fmt.Errorf("%w: bad server_name extension", errNotTLS)
	}
	var host string
	found := false
	for len(list.b) > 0 {
		typ := list.u8()
		name := list.vec(2)
		if list.bad || len(name.b) == 0 {
			return "", fmt.Errorf("%w: bad server_name entry", errNotTLS)
		}
		if typ != 0 {
			continue
		}
		if found {
			return "", fmt.Errorf("%w: more than one host_name", errNotTLS)
		}
		host, found = string(name.b), true
	}
	if !found {
		return "", fmt.Errorf("%w: server_name without host_name", errNotTLS)
	}
	return host, nil
}
