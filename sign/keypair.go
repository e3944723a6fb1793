package sign

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/secure-systems-lab/go-securesystemslib/encrypted"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
)

// GenerateKeyPair writes dir/cosign.key and dir/cosign.pub as
// `cosign generate-key-pair` does: an ECDSA P-256 key, PKCS #8 encrypted
// with the password (scrypt + secretbox) in an "ENCRYPTED SIGSTORE PRIVATE
// KEY" PEM block, mode 0600, and the PKIX public key PEM, mode 0644. A nil
// password is the empty password, which cosign also allows; the key is then
// protected by its file mode only.
//
// Unlike cosign, which asks before overwriting, it refuses when either file
// exists (ErrKeyExists): replacing a signing key silently would orphan every
// signature made with the old one.
func GenerateKeyPair(dir string, password []byte) (privPath, pubPath string, err error) {
	privPath = filepath.Join(dir, "cosign.key")
	pubPath = filepath.Join(dir, "cosign.pub")
	for _, p := range []string{privPath, pubPath} {
		if _, err := os.Lstat(p); err == nil {
			return "", "", fmt.Errorf("%w: %s", ErrKeyExists, p)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", "", err
		}
	}

	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return "", "", err
	}
	if password == nil {
		password = []byte{}
	}
	enc, err := encrypted.Encrypt(der, password)
	if err != nil {
		return "", "", fmt.Errorf("encrypting private key: %w", err)
	}
	privPEM := pem.EncodeToMemory(&pem.Block{Type: pemEncryptedSigstoreKey, Bytes: enc})
	pubPEM, err := cryptoutils.MarshalPublicKeyToPEM(priv.Public())
	if err != nil {
		return "", "", err
	}

	if err := writeNew(privPath, privPEM, 0o600); err != nil {
		return "", "", err
	}
	if err := writeNew(pubPath, pubPEM, 0o644); err != nil {
		_ = os.Remove(privPath) // no half key pair left behind
		return "", "", err
	}
	return privPath, pubPath, nil
}

// writeNew creates path exclusively (O_EXCL: a file that appeared since the
// check is not overwritten, a symlink is not followed) with exactly mode.
func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%w: %s", ErrKeyExists, path)
		}
		return err
	}
	// The umask may have narrowed mode; set it exactly, as documented.
	if err := f.Chmod(mode); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}
