package sign

import (
	"errors"
	"fmt"

	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	"github.com/sigstore/sigstore-go/pkg/bundle"
	sgsign "github.com/sigstore/sigstore-go/pkg/sign"
	"google.golang.org/protobuf/encoding/protojson"
)

// marshalBundle renders a bundle as the JSON cosign reads (protojson, the
// protobuf-specs canonical JSON names). The bytes are not stable across
// library versions: compare bundles by verifying, never byte for byte.
func marshalBundle(pb *protobundle.Bundle) ([]byte, error) {
	js, err := protojson.Marshal(pb)
	if err != nil {
		return nil, fmt.Errorf("encoding bundle: %w", err)
	}
	return js, nil
}

// parseBundle decodes and structurally validates bundle JSON (media type,
// content, verification material, inclusion proofs for v0.2+).
func parseBundle(data []byte) (*bundle.Bundle, error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("%w: empty input", ErrMalformedBundle)
	}
	var b bundle.Bundle
	if err := b.UnmarshalJSON(data); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedBundle, err)
	}
	return &b, nil
}

// dsseContent validates a DSSE request before anything is signed.
func dsseContent(payloadType string, payload []byte) (*sgsign.DSSEData, error) {
	if payloadType == "" {
		return nil, errors.New("DSSE payload type is empty")
	}
	if len(payload) == 0 {
		return nil, errors.New("DSSE payload is empty")
	}
	return &sgsign.DSSEData{Data: payload, PayloadType: payloadType}, nil
}
