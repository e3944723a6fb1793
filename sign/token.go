package sign

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"time"
)

// TokenInfo is what CheckToken read from an identity token. Nothing in it
// is authenticated: Fulcio verifies the token's signature, not this package.
type TokenInfo struct {
	Issuer   string
	Subject  string
	Audience []string
	Expiry   time.Time
}

// nbfLeeway tolerates a runner clock slightly behind the token issuer's.
const nbfLeeway = time.Minute

// CheckToken parses a JWT WITHOUT verifying its signature and reports what
// would make Fulcio reject it: malformed, expired, not yet valid, or
// missing iss/sub/aud/exp. The runner calls it before a build starts, so a
// token that cannot be used to sign fails the run at second 0, not after an
// hour of building. The token itself never appears in an error.
//
// It does not require aud to be "sigstore" (the public-good client ID),
// because a private Fulcio may use another; Fulcio checks that.
func CheckToken(tok string, now time.Time) (TokenInfo, error) {
	var info TokenInfo
	parts := strings.Split(strings.TrimSpace(tok), ".")
	if len(parts) != 3 {
		return info, fmt.Errorf("%w: want 3 dot-separated JWS parts, got %d", ErrTokenMalformed, len(parts))
	}
	var hdr struct {
		Alg string `json:"alg"`
	}
	if err := decodeSegment(parts[0], &hdr); err != nil {
		return info, fmt.Errorf("%w: header: %v", ErrTokenMalformed, err)
	}
	if hdr.Alg == "" || strings.EqualFold(hdr.Alg, "none") {
		return info, fmt.Errorf("%w: unsigned token (alg %q)", ErrTokenMalformed, hdr.Alg)
	}
	if parts[2] == "" {
		return info, fmt.Errorf("%w: empty signature", ErrTokenMalformed)
	}
	var c struct {
		Iss string          `json:"iss"`
		Sub string          `json:"sub"`
		Aud json.RawMessage `json:"aud"`
		Exp *json.Number    `json:"exp"`
		Nbf *json.Number    `json:"nbf"`
	}
	if err := decodeSegment(parts[1], &c); err != nil {
		return info, fmt.Errorf("%w: claims: %v", ErrTokenMalformed, err)
	}
	aud, err := parseAudience(c.Aud)
	if err != nil {
		return info, fmt.Errorf("%w: aud: %v", ErrTokenMalformed, err)
	}
	info = TokenInfo{Issuer: c.Iss, Subject: c.Sub, Audience: aud}

	var missing []string
	if c.Iss == "" {
		missing = append(missing, "iss")
	}
	if c.Sub == "" {
		missing = append(missing, "sub")
	}
	if len(aud) == 0 {
		missing = append(missing, "aud")
	}
	if c.Exp == nil {
		missing = append(missing, "exp")
	}
	if len(missing) > 0 {
		return info, fmt.Errorf("%w: missing %s (issuer %q)", ErrTokenClaims, strings.Join(missing, ", "), c.Iss)
	}

	exp, err := numericDate(*c.Exp)
	if err != nil {
		return info, fmt.Errorf("%w: exp: %v", ErrTokenMalformed, err)
	}
	info.Expiry = exp
	if !now.Before(exp) {
		return info, fmt.Errorf("%w: expired at %s, %s ago (issuer %q, subject %q)",
			ErrTokenExpired, exp.UTC().Format(time.RFC3339), now.Sub(exp).Round(time.Second), c.Iss, c.Sub)
	}
	if c.Nbf != nil {
		nbf, err := numericDate(*c.Nbf)
		if err != nil {
			return info, fmt.Errorf("%w: nbf: %v", ErrTokenMalformed, err)
		}
		if now.Add(nbfLeeway).Before(nbf) {
			return info, fmt.Errorf("%w: not before %s (now %s; issuer %q)",
				ErrTokenNotYetValid, nbf.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), c.Iss)
		}
	}
	return info, nil
}

func decodeSegment(seg string, v any) error {
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(seg, "="))
	if err != nil {
		return fmt.Errorf("not base64url")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("not a JSON object")
	}
	return nil
}

// parseAudience accepts both JWT forms: a string or an array of strings.
func parseAudience(raw json.RawMessage) ([]string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var one string
	if err := json.Unmarshal(raw, &one); err == nil {
		if one == "" {
			return nil, nil
		}
		return []string{one}, nil
	}
	var many []string
	if err := json.Unmarshal(raw, &many); err != nil {
		return nil, fmt.Errorf("want a string or an array of strings")
	}
	var out []string
	for _, a := range many {
		if a != "" {
			out = append(out, a)
		}
	}
	return out, nil
}

// numericDate converts a JWT NumericDate (seconds, possibly fractional).
func numericDate(n json.Number) (time.Time, error) {
	f, err := n.Float64()
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f < 0 || f > 1e12 {
		return time.Time{}, fmt.Errorf("not a valid NumericDate")
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)), nil
}
