package sign

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/digitorus/timestamp"
	"github.com/sigstore/sigstore-go/pkg/root"
)

// fakeSigstore is a minimal Fulcio + TSA pair for unit tests of the keyless
// signer's own logic (token handling, certificate caching, error
// reporting). It implements only the two HTTP calls sigstore-go makes. The
// real Fulcio, TSA and Rekor v2 are exercised in integration/sigstore.
type fakeSigstore struct {
	fulcio, tsa   *httptest.Server
	caCert        *x509.Certificate
	caKey         *ecdsa.PrivateKey
	tsaRoot       *x509.Certificate
	tsaLeaf       *x509.Certificate
	tsaKey        *ecdsa.PrivateKey
	fulcioCalls   atomic.Int32
	echoAuthOn401 bool
}

var (
	oidFulcioIssuerV2 = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 57264, 1, 8}
	oidExtKeyUsage    = asn1.ObjectIdentifier{2, 5, 29, 37}
	oidTimeStamping   = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 8}
)

func newFakeSigstore(t *testing.T) *fakeSigstore {
	t.Helper()
	f := &fakeSigstore{}
	f.caCert, f.caKey = selfSignedCA(t, "fake fulcio")
	var tsaRootKey *ecdsa.PrivateKey
	f.tsaRoot, tsaRootKey = selfSignedCA(t, "fake tsa")
	f.tsaKey, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	eku, _ := asn1.Marshal([]asn1.ObjectIdentifier{oidTimeStamping})
	f.tsaLeaf = issue(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "fake tsa leaf"},
		NotBefore:   time.Now().Add(-time.Hour),
		NotAfter:    time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageTimeStamping},
		// RFC 3161 requires the timeStamping EKU to be critical.
		ExtraExtensions: []pkix.Extension{{Id: oidExtKeyUsage, Critical: true, Value: eku}},
	}, &f.tsaKey.PublicKey, f.tsaRoot, tsaRootKey)

	f.fulcio = httptest.NewServer(http.HandlerFunc(f.serveFulcio))
	f.tsa = httptest.NewServer(http.HandlerFunc(f.serveTSA))
	t.Cleanup(f.fulcio.Close)
	t.Cleanup(f.tsa.Close)
	return f
}

func selfSignedCA(t *testing.T, cn string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	return issue(t, tmpl, &k.PublicKey, nil, k), k
}

func issue(t testing.TB, tmpl *x509.Certificate, pub crypto.PublicKey, parent *x509.Certificate, parentKey crypto.Signer) *x509.Certificate {
	t.Helper()
	c, err := issueCert(tmpl, pub, parent, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func issueCert(tmpl *x509.Certificate, pub crypto.PublicKey, parent *x509.Certificate, parentKey crypto.Signer) (*x509.Certificate, error) {
	tmpl.SerialNumber, _ = rand.Int(rand.Reader, big.NewInt(1<<62))
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, parentKey)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// serveFulcio answers POST /api/v2/signingCert like Fulcio: a 10-minute
// code-signing certificate whose SAN is https://<ci_config_ref_uri> and
// whose issuer extension is the token's iss (claims are not verified).
func (f *fakeSigstore) serveFulcio(w http.ResponseWriter, r *http.Request) {
	f.fulcioCalls.Add(1)
	auth := r.Header.Get("Authorization")
	tok := strings.TrimPrefix(auth, "Bearer ")
	if f.echoAuthOn401 {
		http.Error(w, `{"message":"bad token `+auth+`"}`, http.StatusUnauthorized)
		return
	}
	var claims struct {
		Iss string `json:"iss"`
		Ref string `json:"ci_config_ref_uri"`
	}
	parts := strings.Split(tok, ".")
	raw, _ := base64.RawURLEncoding.DecodeString(parts[1])
	json.Unmarshal(raw, &claims)
	var req struct {
		PublicKeyRequest struct {
			PublicKey struct{ Content string } `json:"publicKey"`
		} `json:"publicKeyRequest"`
	}
	body, _ := io.ReadAll(r.Body)
	if err := json.Unmarshal(body, &req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	blk, _ := pem.Decode([]byte(req.PublicKeyRequest.PublicKey.Content))
	pub, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	san, _ := url.Parse("https://" + claims.Ref)
	iss, _ := asn1.MarshalWithParams(claims.Iss, "utf8")
	leaf, err := issueCert(&x509.Certificate{
		NotBefore:       time.Now().Add(-time.Second),
		NotAfter:        time.Now().Add(10 * time.Minute),
		KeyUsage:        x509.KeyUsageDigitalSignature,
		ExtKeyUsage:     []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning},
		URIs:            []*url.URL{san},
		ExtraExtensions: []pkix.Extension{{Id: oidFulcioIssuerV2, Value: iss}},
	}, pub, f.caCert, f.caKey)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	pemOf := func(c *x509.Certificate) string {
		return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
	}
	json.NewEncoder(w).Encode(map[string]any{"signedCertificateEmbeddedSct": map[string]any{
		"chain": map[string]any{"certificates": []string{pemOf(leaf), pemOf(f.caCert)}},
	}})
}

// serveTSA answers an RFC 3161 request.
func (f *fakeSigstore) serveTSA(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	req, err := timestamp.ParseRequest(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ts := timestamp.Timestamp{
		HashAlgorithm:     req.HashAlgorithm,
		HashedMessage:     req.HashedMessage,
		Time:              time.Now(),
		Nonce:             req.Nonce,
		Policy:            asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 57264, 2},
		AddTSACertificate: req.Certificates,
	}
	resp, err := ts.CreateResponseWithOpts(f.tsaLeaf, f.tsaKey, crypto.SHA256)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/timestamp-reply")
	w.Write(resp)
}

// trustedRoot trusts this fake Fulcio CA and TSA (no logs).
func (f *fakeSigstore) trustedRoot(t *testing.T) *root.TrustedRoot {
	t.Helper()
	start := time.Now().Add(-time.Hour)
	tr, err := root.NewTrustedRoot(root.TrustedRootMediaType01,
		[]root.CertificateAuthority{&root.FulcioCertificateAuthority{Root: f.caCert, URI: f.fulcio.URL, ValidityPeriodStart: start}},
		nil,
		[]root.TimestampingAuthority{&root.SigstoreTimestampingAuthority{Root: f.tsaRoot, Leaf: f.tsaLeaf, URI: f.tsa.URL, ValidityPeriodStart: start}},
		nil)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}
