package sign_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/cleanroom-ci/cleanroom/sign"
)

// The runner's use: one Signer per run; a blob bundle per artifact and a
// DSSE bundle for the provenance statement.
func ExampleNewKeySigner() {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader) // in practice: sign.LoadKey("cosign.key", password)
	signer, err := sign.NewKeySigner(key, sign.KeyOptions{})
	if err != nil {
		panic(err)
	}
	artifact := []byte("hello.tar contents")
	bundle, err := signer.SignBlob(context.Background(), artifact) // write to <out>/hello.tar.sigstore.json
	if err != nil {
		panic(err)
	}

	res, err := sign.VerifyBlob(bundle, bytes.NewReader(artifact), sign.VerifyOptions{PublicKey: key.Public()})
	fmt.Println(err == nil, res.Identity == signer.Identity())

	_, err = sign.VerifyBlob(bundle, bytes.NewReader([]byte("tampered")), sign.VerifyOptions{PublicKey: key.Public()})
	fmt.Println(errors.Is(err, sign.ErrSignatureMismatch))
	// Output:
	// true true
	// true
}
