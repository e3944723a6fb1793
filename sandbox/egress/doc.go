// Package egress is the network egress proxy of a build step: the step's
// network namespace has only loopback, and the runner serves a listener
// inside it with a Proxy, which is therefore the step's only way out. The
// package knows nothing about namespaces; it is handed a net.Listener.
//
// The proxy is deny-by-default and records every decision:
//
//   - HTTP_PROXY: absolute-form requests are checked and forwarded with
//     hop-by-hop headers removed, bodies streamed and response bodies hashed
//     (SHA-256) on the way through.
//   - HTTPS_PROXY: CONNECT is checked on host:port, then the tunnel's first
//     bytes must be a TLS ClientHello naming the same host (SNI) before the
//     upstream is dialed.
//   - GOPROXY: origin-form requests under /gomod/ are forwarded to a
//     configured upstream module proxy (and checksum database), each fetch
//     recorded with module, version and hash.
//
// # Rules
//
// An allowlist entry is one of:
//
//	example.com             the host, ports 80 and 443
//	*.example.com           any name one or more labels below example.com (not example.com itself)
//	example.com:8443        the host, that port only
//	*.example.com:8443
//	192.0.2.1, 192.0.2.1:8080
//	2001:db8::1, [2001:db8::1]:8080
//	10.0.0.0/8, 10.0.0.0/8:443
//	fd00::/8, [fd00::/8]:443
//
// A rule without a port means ports 80 and 443. Names are matched after
// lower-casing, IDNA mapping to punycode and removing a trailing dot.
//
// # Decisions
//
// Name rules match names; IP/CIDR rules match addresses. A request for a
// name needs a name rule, and every address the name resolves to must be
// public or covered by an IP/CIDR rule: names never reach loopback, private,
// link-local (metadata), CGNAT or other special addresses on the strength of
// a name rule, which defeats DNS rebinding. A request for an IP literal, in
// any spelling, needs an IP/CIDR rule. The proxy connects to exactly the
// address it checked; nothing is resolved twice. Names without a matching
// rule are not even resolved.
//
// Audit mode allows what enforce mode would deny for want of a rule,
// records it as "audit-allow" and collects the entries that would have been
// needed (Proxy.WouldNeed). It does not allow special addresses without an
// IP/CIDR rule, malformed or smuggling requests, or tunnels failing the SNI
// check: those stay denied in both modes.
//
// # Events
//
// Each request yields exactly one Event: a denial at the moment it is
// decided, an allowed request when it completes (with status, bytes and
// hash). Proxy.Denials summarises the distinct denials for the run report.
package egress
