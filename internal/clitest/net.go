package clitest

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"testing"
	"time"
)

// ClientHello captures the first TLS record a Go client sends for sni, for
// tests that replay it through the proxy with a CONNECT to another host.
func ClientHello(t testing.TB, sni string) []byte {
	t.Helper()
	a, b := net.Pipe()
	go tls.Client(a, &tls.Config{ServerName: sni, InsecureSkipVerify: true}).Handshake()
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 16<<10)
	n, err := b.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
	b.Close()
	return buf[:n]
}

// AddHostsEntry adds a line to /etc/hosts for the test and removes it
// after: how tests make an allowlisted name resolve to loopback.
func AddHostsEntry(t testing.TB, ip, name string) {
	t.Helper()
	orig, err := os.ReadFile("/etc/hosts")
	if err != nil {
		t.Fatal(err)
	}
	line := fmt.Sprintf("%s %s # cleanroom test\n", ip, name)
	if err := os.WriteFile("/etc/hosts", append(append([]byte{}, orig...), line...), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cur, _ := os.ReadFile("/etc/hosts")
		os.WriteFile("/etc/hosts", bytes.ReplaceAll(cur, []byte(line), nil), 0o644)
	})
}
