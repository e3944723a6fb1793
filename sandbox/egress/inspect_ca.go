package egress

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"sync"
	"time"
)

// DefaultInspectValidity is how long an inspection CA (and every leaf it
// mints) is valid unless told otherwise: short, so that a certificate is
// soon worthless after its run. (The runner asks for the run's longest
// possible duration instead.) The private key never leaves the runner's
// memory either way.
const DefaultInspectValidity = 24 * time.Hour

// InspectCA is the certificate authority of one run's TLS inspection. Its
// ECDSA P-256 key exists only in this process's memory: it is never
// written, logged or passed to a step; only the certificate is.
//
// # Name constraints
//
// The CA certificate carries critical X.509 name constraints derived from
// the allowlist, so that even its certificate cannot vouch for a name the
// run could not reach:
//
//   - a host rule "deps.example.org" permits the DNS name deps.example.org
//     (by X.509 rules this also covers names below it, which the proxy
//     would still refuse by policy);
//   - a wildcard rule "*.example.org" permits ".example.org": names below
//     example.org, not example.org itself, exactly as the rule means;
//   - IP and CIDR rules permit those address ranges;
//   - without any name rule no DNS name is permitted (the constraint
//     names only the reserved "invalid" domain), and without any IP rule
//     every address is excluded.
//
// Ports are not part of X.509 and are ignored. In audit mode any host may
// be reached, so the CA is minted without constraints.
type InspectCA struct {
	cert    *x509.Certificate
	certDER []byte
	key     *ecdsa.PrivateKey
	leafKey *ecdsa.PrivateKey // one key for every leaf: minting stays cheap

	mu     sync.Mutex
	leaves map[string]*tls.Certificate // by host (name or IP text)
}

// InspectCAOptions configures NewInspectCA.
type InspectCAOptions struct {
	// Rules are the allowlist rules of every step the CA serves.
	Rules []string
	// Unconstrained omits name constraints (audit mode).
	Unconstrained bool
	// Validity defaults to DefaultInspectValidity.
	Validity time.Duration
	// Name goes into the subject's common name, e.g. the run id.
	Name string
}

// NewInspectCA mints a fresh CA.
func NewInspectCA(o InspectCAOptions) (*InspectCA, error) {
	if o.Validity <= 0 {
		o.Validity = DefaultInspectValidity
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	cn := "cleanroom egress inspection CA"
	if o.Name != "" {
		cn += " " + o.Name
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randSerial(),
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"cleanroom run"}},
		NotBefore:             now.Add(-5 * time.Minute), // tolerate a little clock skew in the sandbox
		NotAfter:              now.Add(o.Validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		SubjectKeyId:          keyID(&key.PublicKey),
	}
	if !o.Unconstrained {
		if err := constrain(tmpl, o.Rules); err != nil {
			return nil, err
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("egress: mint inspection CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &InspectCA{cert: cert, certDER: der, key: key, leafKey: leafKey, leaves: map[string]*tls.Certificate{}}, nil
}

// constrain sets the name constraints for rules (see InspectCA).
func constrain(tmpl *x509.Certificate, rules []string) error {
	seen := map[string]bool{}
	var dns []string
	var ips []*net.IPNet
	for _, s := range rules {
		r, err := ParseRule(s)
		if err != nil {
			return err
		}
		var d string
		switch r.kind {
		case kindName:
			d = r.name
		case kindWildcard:
			d = "." + r.name
		case kindPrefix:
			p := r.prefix
			ipn := &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
			if !seen[ipn.String()] {
				seen[ipn.String()] = true
				ips = append(ips, ipn)
			}
			continue
		}
		if !seen[d] {
			seen[d] = true
			dns = append(dns, d)
		}
	}
	if len(dns) == 0 {
		dns = []string{"invalid"} // RFC 2606: names nothing that exists
	}
	tmpl.PermittedDNSDomainsCritical = true
	tmpl.PermittedDNSDomains = dns
	if len(ips) > 0 {
		tmpl.PermittedIPRanges = ips
	} else {
		tmpl.ExcludedIPRanges = []*net.IPNet{
			{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
			{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)},
		}
	}
	return nil
}

// CertPEM returns the CA certificate, PEM-encoded, for the step's trust
// store.
func (ca *InspectCA) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.certDER})
}

// Certificate returns the CA certificate.
func (ca *InspectCA) Certificate() *x509.Certificate { return ca.cert }

// leafFor returns the leaf certificate for a host (a normalised name or an
// IP literal's text), minting it on first use.
func (ca *InspectCA) leafFor(host string) (*tls.Certificate, error) {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if c, ok := ca.leaves[host]; ok {
		return c, nil
	}
	if len(ca.leaves) >= maxSummaryEntries {
		clear(ca.leaves) // bound memory; leaves are cheap to mint again
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          randSerial(),
		NotBefore:             ca.cert.NotBefore,
		NotAfter:              ca.cert.NotAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		AuthorityKeyId:        ca.cert.SubjectKeyId,
	}
	if a, err := netip.ParseAddr(host); err == nil {
		// No common name: some verifiers check a CN that looks like a
		// host name against the DNS constraints, which an address fails.
		tmpl.IPAddresses = []net.IP{net.IP(a.Unmap().AsSlice())}
	} else {
		tmpl.Subject = pkix.Name{CommonName: host}
		tmpl.DNSNames = []string{host}
	}
	if tmpl.NotAfter.Before(now) {
		return nil, errors.New("egress: the inspection CA has expired")
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &ca.leafKey.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("egress: mint leaf for %s: %w", host, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	c := &tls.Certificate{Certificate: [][]byte{der, ca.certDER}, PrivateKey: ca.leafKey, Leaf: leaf}
	ca.leaves[host] = c
	return c, nil
}

func randSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err)
	}
	return n.Add(n, big.NewInt(1))
}

func keyID(pub *ecdsa.PublicKey) []byte {
	b, _ := x509.MarshalPKIXPublicKey(pub)
	s := sha256.Sum256(b)
	return s[:20]
}
