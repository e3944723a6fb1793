package sigstore_test

import (
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"testing"
	"time"

	provenance "github.com/in-toto/attestation/go/predicates/provenance/v1"
	intoto "github.com/in-toto/attestation/go/v1"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// slsaStatement builds a small, valid in-toto SLSA v1 provenance statement
// whose subject is the artifact.
func slsaStatement(t *testing.T, name string, artifact []byte) []byte {
	t.Helper()
	sum := sha256.Sum256(artifact)
	ext, _ := structpb.NewStruct(map[string]any{"pipeline": "cleanroom.yaml", "step": "build"})
	prov := &provenance.Provenance{
		BuildDefinition: &provenance.BuildDefinition{
			BuildType:          "https://cleanroom.example/buildtype/v1",
			ExternalParameters: ext,
			ResolvedDependencies: []*intoto.ResourceDescriptor{{
				Uri:    "git+https://gitlab.com/group/project@refs/heads/main",
				Digest: map[string]string{"gitCommit": "714a629c0b401fdce83e847fc9589983fc6f46bc"},
			}},
		},
		RunDetails: &provenance.RunDetails{
			Builder:  &provenance.Builder{Id: "https://cleanroom.example/runner/v1"},
			Metadata: &provenance.BuildMetadata{InvocationId: "run-1", StartedOn: timestamppb.New(time.Now().Add(-time.Minute)), FinishedOn: timestamppb.Now()},
		},
	}
	if err := prov.Validate(); err != nil {
		t.Fatal(err)
	}
	pj, err := protojson.Marshal(prov)
	if err != nil {
		t.Fatal(err)
	}
	pred := &structpb.Struct{}
	if err := protojson.Unmarshal(pj, pred); err != nil {
		t.Fatal(err)
	}
	st := &intoto.Statement{
		Type:          intoto.StatementTypeUri,
		Subject:       []*intoto.ResourceDescriptor{{Name: name, Digest: map[string]string{"sha256": hex.EncodeToString(sum[:])}}},
		PredicateType: "https://slsa.dev/provenance/v1",
		Predicate:     pred,
	}
	if err := st.Validate(); err != nil {
		t.Fatal(err)
	}
	js, err := protojson.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// cryptoutilsPEM is the PKIX PEM of a public key, as in cosign.pub.
func cryptoutilsPEM(pub crypto.PublicKey) ([]byte, error) {
	return cryptoutils.MarshalPublicKeyToPEM(pub)
}
