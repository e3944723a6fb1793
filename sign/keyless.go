package sign

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/sigstore/rekor/pkg/client"
	"github.com/sigstore/sigstore-go/pkg/fulcio/certificate"
	"github.com/sigstore/sigstore-go/pkg/root"
	sgsign "github.com/sigstore/sigstore-go/pkg/sign"
)

// KeylessOptions configures NewKeylessSigner. Empty URLs mean the public
// Sigstore instance (PublicFulcioURL, PublicRekorV2URL/PublicRekorV1URL,
// PublicTSAURL).
type KeylessOptions struct {
	FulcioURL string
	RekorURL  string
	// TSAURL is the full RFC 3161 endpoint (…/api/v1/timestamp). A timestamp
	// is always requested: Rekor v2 gives no signing time, and without one a
	// 10-minute Fulcio certificate cannot be checked later.
	TSAURL string
	// RekorVersion is 2 (default, rekor-tiles) or 1.
	RekorVersion int
	// SkipTlog signs without a transparency-log entry, for deployments that
	// have no Rekor. Signatures are then not publicly auditable, and
	// verifiers that require a log entry (cosign by default) reject them.
	SkipTlog bool
	// TrustedRoot, when set, makes every bundle verify (chain, timestamp,
	// log entry) before it is returned, so a misconfigured deployment fails
	// the run instead of producing unverifiable bundles.
	TrustedRoot *root.TrustedRoot
	// Token supplies the OIDC identity token (required).
	Token TokenSource
	// HTTPClient is used for Fulcio, the TSA and Rekor v2 (nil: 30 s
	// timeout, default transport). Rekor v1 uses its own client.
	HTTPClient *http.Client
}

// certRefreshMargin: a cached certificate is replaced when less than this
// remains of its validity, so the timestamp of a signature made with it
// (taken a moment later) still falls inside the validity window.
const certRefreshMargin = 2 * time.Minute

type keylessSigner struct {
	fulcio    *sgsign.Fulcio
	fulcioURL string
	tsa       []*sgsign.TimestampAuthority
	tlogs     []sgsign.Transparency
	trust     *root.TrustedRoot
	token     TokenSource

	mu       sync.Mutex
	kp       *sgsign.EphemeralKeypair
	certDER  []byte
	notAfter time.Time
	identity string
}

// NewKeylessSigner signs with an ephemeral key certified by Fulcio for the
// token's identity. One key and certificate serve all signatures of a run
// while the certificate is valid (Fulcio issues 10-minute certificates), so
// a run with many artifacts makes one Fulcio request and uses the token
// once; the key lives only in memory.
func NewKeylessSigner(ctx context.Context, o KeylessOptions) (Signer, error) {
	_ = ctx // reserved: construction does no I/O, the token is fetched on first use
	if o.Token == nil {
		return nil, errors.New("keyless signing needs a TokenSource")
	}
	if o.FulcioURL == "" {
		o.FulcioURL = PublicFulcioURL
	}
	if o.TSAURL == "" {
		o.TSAURL = PublicTSAURL
	}
	if o.RekorVersion == 0 {
		o.RekorVersion = 2
	}
	hc := o.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	s := &keylessSigner{
		fulcio: sgsign.NewFulcio(&sgsign.FulcioOptions{
			BaseURL: strings.TrimRight(o.FulcioURL, "/"), Retries: 2,
			Transport: hc.Transport, Timeout: hc.Timeout,
		}),
		fulcioURL: o.FulcioURL,
		tsa:       []*sgsign.TimestampAuthority{newTSA(o.TSAURL, hc)},
		trust:     o.TrustedRoot,
		token:     o.Token,
	}
	if !o.SkipTlog {
		switch o.RekorVersion {
		case 2:
			if o.RekorURL == "" {
				o.RekorURL = PublicRekorV2URL
			}
			s.tlogs = []sgsign.Transparency{sgsign.NewRekor(&sgsign.RekorOptions{
				BaseURL: o.RekorURL, Version: 2,
				ClientV2: &rekorV2Client{base: o.RekorURL, hc: hc},
			})}
		case 1:
			if o.RekorURL == "" {
				o.RekorURL = PublicRekorV1URL
			}
			// Built here, not lazily by sigstore-go, which would write to
			// shared options from concurrent signatures.
			rc, err := client.GetRekorClient(o.RekorURL, client.WithRetryCount(2))
			if err != nil {
				return nil, fmt.Errorf("rekor v1 client: %w", err)
			}
			s.tlogs = []sgsign.Transparency{sgsign.NewRekor(&sgsign.RekorOptions{
				BaseURL: o.RekorURL, Version: 1, Timeout: 30 * time.Second, Client: rc.Entries,
			})}
		default:
			return nil, fmt.Errorf("RekorVersion %d: want 1 or 2", o.RekorVersion)
		}
	}
	return s, nil
}

func (s *keylessSigner) Identity() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.identity == "" {
		return "keyless:" + s.fulcioURL
	}
	return s.identity
}

func (s *keylessSigner) SignBlob(ctx context.Context, data []byte) ([]byte, error) {
	return s.sign(ctx, &sgsign.PlainData{Data: data})
}

func (s *keylessSigner) SignDSSE(ctx context.Context, payloadType string, payload []byte) ([]byte, error) {
	c, err := dsseContent(payloadType, payload)
	if err != nil {
		return nil, err
	}
	return s.sign(ctx, c)
}

func (s *keylessSigner) sign(ctx context.Context, c sgsign.Content) ([]byte, error) {
	kp, der, err := s.credentials(ctx)
	if err != nil {
		return nil, err
	}
	opts := sgsign.BundleOptions{
		CertificateProvider:  staticCert(der),
		TimestampAuthorities: s.tsa,
		TransparencyLogs:     s.tlogs,
		Context:              ctx,
	}
	if s.trust != nil { // a nil *TrustedRoot in the interface would panic
		opts.TrustedRoot = s.trust
	}
	pb, err := sgsign.Bundle(c, kp, opts)
	if err != nil {
		return nil, fmt.Errorf("keyless signing as %s: %w", s.Identity(), err)
	}
	return marshalBundle(pb)
}

// credentials returns the current key pair and its certificate, asking
// Fulcio for a new one when none is cached or it is about to expire.
func (s *keylessSigner) credentials(ctx context.Context) (*sgsign.EphemeralKeypair, []byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.kp != nil && time.Until(s.notAfter) > certRefreshMargin {
		return s.kp, s.certDER, nil
	}
	tok, err := s.token(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("identity token: %w", err)
	}
	// Fulcio would also refuse these, with a less helpful message.
	if _, err := CheckToken(tok, time.Now()); err != nil {
		return nil, nil, err
	}
	kp, err := sgsign.NewEphemeralKeypair(nil)
	if err != nil {
		return nil, nil, err
	}
	der, err := s.fulcio.GetCertificate(ctx, kp, &sgsign.CertificateProviderOptions{IDToken: tok})
	if err != nil {
		return nil, nil, fmt.Errorf("fulcio %s: %s", s.fulcioURL, redact(err.Error(), tok))
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("fulcio %s returned an unparseable certificate: %w", s.fulcioURL, err)
	}
	sum, err := certificate.SummarizeCertificate(cert)
	if err != nil {
		return nil, nil, fmt.Errorf("fulcio certificate: %w", err)
	}
	s.kp, s.certDER, s.notAfter, s.identity = kp, der, cert.NotAfter, sum.SubjectAlternativeName
	return kp, der, nil
}

// staticCert hands sigstore-go the certificate already obtained for the key.
type staticCert []byte

func (c staticCert) GetCertificate(context.Context, sgsign.Keypair, *sgsign.CertificateProviderOptions) ([]byte, error) {
	return c, nil
}

// redact removes the token from a message, in case a server echoes it.
func redact(msg, tok string) string {
	if tok == "" {
		return msg
	}
	return strings.ReplaceAll(msg, tok, "[REDACTED TOKEN]")
}
