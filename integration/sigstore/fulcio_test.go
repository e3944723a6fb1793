package sigstore_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/sigstore/fulcio/pkg/ca/ephemeralca"
	fulcioconfig "github.com/sigstore/fulcio/pkg/config"
	fulciogw "github.com/sigstore/fulcio/pkg/generated/protobuf"
	fulcioserver "github.com/sigstore/fulcio/pkg/server"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	"github.com/sigstore/sigstore/pkg/signature"
	"google.golang.org/grpc/metadata"
)

// fulcio is the real Fulcio v1.8.8 CA service, in-process, behind the same
// grpc-gateway HTTP API the real server exposes (cmd/app/http.go), with an
// ephemeral CA and no CT log.
type fulcio struct {
	srv  *httptest.Server
	URL  string
	Root *x509.Certificate
}

func startFulcio(ctx context.Context, issuerURL string) (*fulcio, error) {
	cfg, err := fulcioconfig.Read(fmt.Appendf(nil,
		`{"OIDCIssuers":{%q:{"IssuerURL":%q,"ClientID":"sigstore","Type":"gitlab-pipeline"}}}`, issuerURL, issuerURL))
	if err != nil {
		return nil, fmt.Errorf("fulcio config: %w", err)
	}
	eca, err := ephemeralca.NewEphemeralCA()
	if err != nil {
		return nil, err
	}
	alg, err := signature.NewAlgorithmRegistryConfig([]protocommon.PublicKeyDetails{
		protocommon.PublicKeyDetails_PKIX_ECDSA_P256_SHA_256,
	})
	if err != nil {
		return nil, err
	}
	ca := fulcioserver.NewGRPCCAServer(nil, eca, alg, fulcioserver.NewIssuerPool(cfg))
	mux := runtime.NewServeMux(runtime.WithMetadata(func(_ context.Context, r *http.Request) metadata.MD {
		return metadata.Pairs(fulcioserver.MetadataOIDCTokenKey, strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
	}))
	if err := fulciogw.RegisterCAHandlerServer(ctx, mux, ca); err != nil {
		return nil, err
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mux.ServeHTTP(w, r.WithContext(fulcioconfig.With(r.Context(), cfg))) // the server reads its config from the context
	}))
	chain, err := eca.TrustBundle(ctx)
	if err != nil {
		srv.Close()
		return nil, err
	}
	return &fulcio{srv: srv, URL: srv.URL, Root: chain[0][len(chain[0])-1]}, nil
}

func (f *fulcio) Close() { f.srv.Close() }
