package sign

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"time"
)

// Signing modes, as every front end's configuration spells them (the
// CLI's flags choose one, the GitLab policy and the agent config name it
// in signing.mode).
const (
	ModeNone    = "none"
	ModeKey     = "key"
	ModeKeyless = "keyless"
)

// Config is how outputs are to be signed: the one signing configuration
// of the CLI (flags), the GitLab driver (policy signing section) and the
// agent (config signing section, handed to its child run as flags). New
// is its one constructor, so key loading, token checks and trusted-root
// verification behave the same wherever signing is configured.
type Config struct {
	// Mode is ModeNone (or ""), ModeKey or ModeKeyless.
	Mode string
	// Key is the key file (cosign.key, or a PEM ECDSA/Ed25519 key) of
	// ModeKey. Its password is Password, else the content of PasswordFile
	// (trailing newline dropped), else empty.
	Key          string
	Password     []byte
	PasswordFile string
	// Token supplies ModeKeyless's OIDC token. When nil: the file
	// IdentityTokenFile, else $SIGSTORE_ID_TOKEN, else GitHub Actions'
	// token service when a job runs there.
	Token             TokenSource
	IdentityTokenFile string
	// Sigstore services (empty: the public instance). TSAURL also
	// timestamps ModeKey signatures when set.
	FulcioURL, RekorURL, TSAURL string
	// TrustedRoot, a trusted_root.json, makes every bundle verify before
	// it is returned (ModeKeyless).
	TrustedRoot string
	// SkipTlog signs keyless without a transparency-log entry.
	SkipTlog bool
	// Now is the clock the token is checked against (nil: time.Now).
	Now func() time.Time
	// Log, when set, is told whose identity keyless signing uses
	// (hclog.Logger's Info fits).
	Log func(msg string, args ...any)
}

// ConfigError names the setting of a Config that New could not use, so a
// front end can name it in its own terms (a flag, a policy field).
type ConfigError struct {
	// Field is "mode", "key", "password_file", "identity_token" or
	// "trusted_root".
	Field string
	Err   error
}

func (e *ConfigError) Error() string { return e.Field + ": " + e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// New builds the signer c asks for, or nil for ModeNone. Keyless tokens
// are fetched and checked here, before anything is built: an expired or
// malformed token is a configuration error, not a failure after a long
// build.
func New(ctx context.Context, c Config) (Signer, error) {
	switch c.Mode {
	case ModeNone, "":
		return nil, nil
	case ModeKey:
		return c.keySigner()
	case ModeKeyless:
		return c.keylessSigner(ctx)
	}
	return nil, &ConfigError{"mode", fmt.Errorf("%q: use %s, %s or %s", c.Mode, ModeNone, ModeKey, ModeKeyless)}
}

func (c Config) keySigner() (Signer, error) {
	pw := c.Password
	if pw == nil && c.PasswordFile != "" {
		b, err := os.ReadFile(c.PasswordFile)
		if err != nil {
			return nil, &ConfigError{"password_file", err}
		}
		pw = bytes.TrimRight(b, "\r\n")
	}
	key, err := LoadKey(c.Key, pw)
	if err != nil {
		return nil, &ConfigError{"key", err}
	}
	return NewKeySigner(key, KeyOptions{TSAURL: c.TSAURL})
}

func (c Config) keylessSigner(ctx context.Context) (Signer, error) {
	source := c.Token
	switch {
	case source != nil:
	case c.IdentityTokenFile != "":
		source = TokenFromFile(c.IdentityTokenFile)
	case os.Getenv(EnvToken) == "" && os.Getenv(EnvGitHubTokenURL) != "":
		source = TokenFromGitHubActions()
	default:
		source = TokenFromEnv()
	}
	tok, err := source(ctx)
	if err != nil {
		return nil, &ConfigError{"identity_token", err}
	}
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	info, err := CheckToken(tok, now())
	if err != nil {
		return nil, &ConfigError{"identity_token", fmt.Errorf("OIDC token: %w", err)}
	}
	if c.Log != nil {
		c.Log("keyless signing", "issuer", info.Issuer, "subject", info.Subject, "token_expires", info.Expiry)
	}
	opts := KeylessOptions{
		FulcioURL: c.FulcioURL, RekorURL: c.RekorURL, TSAURL: c.TSAURL, SkipTlog: c.SkipTlog,
		Token: func(context.Context) (string, error) { return tok, nil },
	}
	if c.TrustedRoot != "" {
		if opts.TrustedRoot, err = LoadTrustedRoot(c.TrustedRoot); err != nil {
			return nil, &ConfigError{"trusted_root", err}
		}
	}
	return NewKeylessSigner(ctx, opts)
}
