package sigstore_test

import (
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/sigstore/sigstore/pkg/cryptoutils"
	tsaserver "github.com/sigstore/timestamp-authority/v2/pkg/server"
	"github.com/spf13/viper"
)

// tsa is the real timestamp-authority v2.1.3 REST server, in-process, with
// the in-memory signer (pattern: its pkg/tests/server.go). Its
// configuration is global viper state: one TSA per test process.
type tsa struct {
	srv   *httptest.Server
	URL   string // full RFC 3161 endpoint
	Chain []*x509.Certificate
}

func startTSA() (*tsa, error) {
	viper.Set("timestamp-signer", "memory")
	viper.Set("timestamp-signer-hash", "sha256")
	viper.Set("accepted-policy-oids", []string{"1.3.6.1.4.1.57264.2"})
	viper.Set("default-policy-oid", "1.3.6.1.4.1.57264.2")
	viper.Set("allow-custom-extensions", false)
	api := tsaserver.NewRestAPIServer("127.0.0.1", 0, []string{"http"}, false, 10*time.Second, 10*time.Second)
	srv := httptest.NewServer(api.GetHandler())
	resp, err := http.Get(srv.URL + "/api/v1/timestamp/certchain")
	if err != nil {
		srv.Close()
		return nil, err
	}
	defer resp.Body.Close()
	pemChain, _ := io.ReadAll(resp.Body)
	chain, err := cryptoutils.UnmarshalCertificatesFromPEM(pemChain)
	if err != nil || len(chain) < 2 {
		srv.Close()
		return nil, fmt.Errorf("TSA cert chain (%d certs): %v", len(chain), err)
	}
	return &tsa{srv: srv, URL: srv.URL + "/api/v1/timestamp", Chain: chain}, nil
}

func (t *tsa) Close() { t.srv.Close() }
