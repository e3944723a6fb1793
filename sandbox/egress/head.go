package egress

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"strings"
)

// The request head is read and checked here, byte for byte, before
// net/http parses it. net/http alone is not enough for a proxy: it deletes
// the Host header of absolute-form requests and silently drops
// Content-Length when Transfer-Encoding is present, which are exactly the
// ambiguities that request smuggling exploits. Seeing the raw head lets us
// reject them instead.

var (
	errHeadTooLarge = errors.New("request header too large")
	errBareLF       = errors.New("bare LF in request header (lines must end in CRLF)")
)

// readHead returns the complete request head (through the blank line)
// without consuming it, so that http.ReadRequest can parse the same bytes
// afterwards. br's buffer must be at least max bytes. The slice aliases
// br's buffer and is valid until the next read from br.
func readHead(br *bufio.Reader, max int) ([]byte, error) {
	scanned := 0
	for {
		buf, _ := br.Peek(br.Buffered())
		for ; scanned < len(buf); scanned++ {
			if buf[scanned] != '\n' {
				continue
			}
			if scanned == 0 || buf[scanned-1] != '\r' {
				return nil, errBareLF
			}
			if scanned >= 3 && buf[scanned-2] == '\n' && buf[scanned-3] == '\r' {
				return buf[:scanned+1], nil
			}
		}
		if len(buf) >= max {
			return nil, errHeadTooLarge
		}
		if _, err := br.Peek(len(buf) + 1); err != nil {
			return nil, err
		}
	}
}

// headInfo is what checkHead extracts from the raw head.
type headInfo struct {
	method, target, proto string
	hosts                 []string // raw Host header values
	contentLength         []string
	transferEncoding      []string
}

// checkHead validates a raw request head strictly. It rejects, among
// others: bare CR, control bytes, obs-fold continuation lines (which
// parsers unfold differently), whitespace before the colon, more than one
// Host, more than one Content-Length (even if equal: no honest client sends
// two), Content-Length together with Transfer-Encoding, and any
// Transfer-Encoding but a single "chunked".
func checkHead(head []byte) (headInfo, error) {
	var info headInfo
	if !bytes.HasSuffix(head, []byte("\r\n\r\n")) {
		return info, errors.New("incomplete request header")
	}
	lines := strings.Split(string(head[:len(head)-4]), "\r\n")
	for _, l := range lines {
		if strings.IndexByte(l, '\r') >= 0 || strings.IndexByte(l, '\n') >= 0 {
			return info, errors.New("bare CR in request header")
		}
	}
	parts := strings.Split(lines[0], " ")
	if len(parts) != 3 {
		return info, errors.New("malformed request line")
	}
	info.method, info.target, info.proto = parts[0], parts[1], parts[2]
	if !isToken(info.method) {
		return info, errors.New("malformed method")
	}
	if info.target == "" || hasCTLOrSpace(info.target) {
		return info, errors.New("malformed request target")
	}
	if info.proto != "HTTP/1.1" && info.proto != "HTTP/1.0" {
		return info, fmt.Errorf("unsupported protocol %q", clip(info.proto))
	}
	for _, l := range lines[1:] {
		if l == "" {
			return info, errors.New("empty header line")
		}
		if l[0] == ' ' || l[0] == '\t' {
			return info, errors.New("obsolete line folding in request header")
		}
		name, value, ok := strings.Cut(l, ":")
		if !ok || !isToken(name) {
			return info, fmt.Errorf("malformed header line %q", clip(l))
		}
		value = strings.Trim(value, " \t")
		if hasCTL(value) {
			return info, fmt.Errorf("control character in header %q", clip(name))
		}
		switch strings.ToLower(name) {
		case "host":
			info.hosts = append(info.hosts, value)
		case "content-length":
			info.contentLength = append(info.contentLength, value)
		case "transfer-encoding":
			info.transferEncoding = append(info.transferEncoding, value)
		}
	}
	switch {
	case len(info.hosts) > 1:
		return info, errors.New("more than one Host header")
	case len(info.hosts) == 0 && info.proto == "HTTP/1.1" && info.method != "CONNECT":
		return info, errors.New("missing Host header")
	case len(info.contentLength) > 1:
		return info, errors.New("more than one Content-Length header (request smuggling)")
	case len(info.contentLength) == 1 && len(info.transferEncoding) > 0:
		return info, errors.New("both Content-Length and Transfer-Encoding (request smuggling)")
	case len(info.transferEncoding) > 1:
		return info, errors.New("more than one Transfer-Encoding header")
	case len(info.transferEncoding) == 1 && !strings.EqualFold(info.transferEncoding[0], "chunked"):
		return info, fmt.Errorf("unsupported Transfer-Encoding %q", clip(info.transferEncoding[0]))
	case len(info.transferEncoding) == 1 && info.proto == "HTTP/1.0":
		return info, errors.New("Transfer-Encoding in an HTTP/1.0 request")
	case len(info.contentLength) == 1 && (!allDigits(info.contentLength[0]) || len(info.contentLength[0]) > 18):
		return info, fmt.Errorf("invalid Content-Length %q", clip(info.contentLength[0]))
	}
	return info, nil
}

// isToken reports whether s is an RFC 9110 token.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

func hasCTL(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' && c != '\t' || c == 0x7f {
			return true
		}
	}
	return false
}

func hasCTLOrSpace(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f {
			return true
		}
	}
	return false
}

// clip shortens attacker-controlled text before it goes into a message.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
