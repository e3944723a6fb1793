package sign

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

// jwt builds an (unverifiable) compact JWS with the given claims.
func jwt(t *testing.T, claims map[string]any) string {
	t.Helper()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	return enc(map[string]string{"alg": "RS256", "typ": "JWT"}) + "." + enc(claims) + ".c2lnbmF0dXJl"
}

var tokNow = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func gitlabClaims() map[string]any {
	return map[string]any{
		"iss": "https://gitlab.com",
		"sub": "project_path:group/project:ref_type:branch:ref:main",
		"aud": "sigstore",
		"exp": tokNow.Add(time.Hour).Unix(),
		"nbf": tokNow.Add(-time.Minute).Unix(),
		"iat": tokNow.Add(-time.Minute).Unix(),
	}
}

func TestCheckTokenValid(t *testing.T) {
	info, err := CheckToken(jwt(t, gitlabClaims()), tokNow)
	if err != nil {
		t.Fatal(err)
	}
	if info.Issuer != "https://gitlab.com" || info.Subject == "" || len(info.Audience) != 1 || info.Audience[0] != "sigstore" {
		t.Fatalf("info %+v", info)
	}
	if !info.Expiry.Equal(tokNow.Add(time.Hour)) {
		t.Fatalf("expiry %v", info.Expiry)
	}

	c := gitlabClaims()
	c["aud"] = []string{"other", "sigstore"}
	c["exp"] = float64(tokNow.Add(time.Hour).Unix()) + 0.5 // NumericDate may be fractional
	if info, err := CheckToken(jwt(t, c), tokNow); err != nil || len(info.Audience) != 2 {
		t.Fatalf("aud array: %+v %v", info, err)
	}
}

func TestCheckTokenRejects(t *testing.T) {
	with := func(k string, v any) string {
		c := gitlabClaims()
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return jwt(t, c)
	}
	good := jwt(t, gitlabClaims())
	parts := strings.Split(good, ".")
	none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none"}`)) + "." + parts[1] + "."

	cases := []struct {
		name, tok string
		want      error
		mention   string
	}{
		{"empty", "", ErrTokenMalformed, "3 dot-separated"},
		{"two-parts", parts[0] + "." + parts[1], ErrTokenMalformed, "got 2"},
		{"bad-base64", parts[0] + ".%%%." + parts[2], ErrTokenMalformed, "base64"},
		{"not-json", parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte("hello")) + "." + parts[2], ErrTokenMalformed, "JSON"},
		{"alg-none", none, ErrTokenMalformed, "unsigned"},
		{"expired", with("exp", tokNow.Add(-time.Minute).Unix()), ErrTokenExpired, "expired at 2026-11-25T11:59:00Z"},
		{"expires-now", with("exp", tokNow.Unix()), ErrTokenExpired, ""},
		{"not-yet-valid", with("nbf", tokNow.Add(10*time.Minute).Unix()), ErrTokenNotYetValid, "not before"},
		{"no-iss", with("iss", nil), ErrTokenClaims, "iss"},
		{"no-sub", with("sub", ""), ErrTokenClaims, "sub"},
		{"no-aud", with("aud", nil), ErrTokenClaims, "aud"},
		{"empty-aud-array", with("aud", []string{}), ErrTokenClaims, "aud"},
		{"no-exp", with("exp", nil), ErrTokenClaims, "exp"},
		{"bad-exp", with("exp", "tomorrow"), ErrTokenMalformed, ""},
		{"bad-aud", with("aud", 42), ErrTokenMalformed, "aud"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := CheckToken(c.tok, tokNow)
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			if !strings.Contains(err.Error(), c.mention) {
				t.Fatalf("error %q does not mention %q", err, c.mention)
			}
			if len(c.tok) > 20 && strings.Contains(err.Error(), c.tok[10:]) {
				t.Fatalf("error leaks the token: %v", err)
			}
		})
	}
}

func TestCheckTokenNbfLeeway(t *testing.T) {
	c := gitlabClaims()
	c["nbf"] = tokNow.Add(30 * time.Second).Unix() // issuer clock slightly ahead
	if _, err := CheckToken(jwt(t, c), tokNow); err != nil {
		t.Fatal(err)
	}
}
