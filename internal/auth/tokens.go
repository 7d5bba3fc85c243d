package auth

import (
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Issuer is the "iss" claim of every access token.
const Issuer = "parley"

// KeyLen is the length of keys made by NewKey, and the least NewTokens accepts: HS256's
// key should be as long as its output.
const KeyLen = 32

// Errors from ParseAccess, wrapped: test with errors.Is. An expired token wraps both.
var (
	ErrInvalidToken = errors.New("invalid access token")
	ErrTokenExpired = errors.New("access token expired")
)

// NewKey returns KeyLen random bytes, a fresh signing key for NewTokens.
func NewKey() []byte {
	key := make([]byte, KeyLen)
	_, _ = rand.Read(key) // crypto/rand.Read never fails (it crashes the program instead)
	return key
}

// Claims are what an access token asserts.
type Claims struct {
	UserID    string
	DeviceID  string
	ExpiresAt time.Time
}

// accessClaims is the token's JSON: sub = user id, did = device id, plus iss, iat and exp.
type accessClaims struct {
	jwt.RegisteredClaims
	DeviceID string `json:"did"`
}

// Tokens issues and checks access tokens: JWTs signed with HS256, short-lived, stateless.
// (Logout works by revoking the device's refresh token; an access token stays valid until it
// expires, which is why its TTL should be minutes.) A Tokens is safe for concurrent use.
type Tokens struct {
	key    []byte
	ttl    time.Duration
	now    func() time.Time
	parser *jwt.Parser
}

// NewTokens returns Tokens signing with key (at least KeyLen bytes; it is copied), issuing
// tokens valid for accessTTL and reading the time from now (nil means time.Now; tests pass a
// fake clock).
func NewTokens(key []byte, accessTTL time.Duration, now func() time.Time) (*Tokens, error) {
	if len(key) < KeyLen {
		return nil, fmt.Errorf("auth: token key is %d bytes, want at least %d", len(key), KeyLen)
	}
	if accessTTL <= 0 {
		return nil, fmt.Errorf("auth: access token TTL must be positive, got %s", accessTTL)
	}
	if now == nil {
		now = time.Now
	}
	return &Tokens{
		key: append([]byte(nil), key...),
		ttl: accessTTL,
		now: now,
		// Only HS256: a token naming another algorithm ("none", RS256 with our key as a
		// "public key", HS512) is rejected before its signature is looked at.
		parser: jwt.NewParser(
			jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
			jwt.WithIssuer(Issuer),
			jwt.WithExpirationRequired(),
			// One encoding per token: no second spelling of a signature is accepted.
			jwt.WithStrictDecoding(),
			jwt.WithTimeFunc(now),
		),
	}, nil
}

// IssueAccess returns an access token for userID's device deviceID and how long it is valid
// (the TTL, less the sub-second part that the token's whole-second expiry drops).
func (t *Tokens) IssueAccess(userID, deviceID string) (token string, expiresIn time.Duration, err error) {
	if userID == "" || deviceID == "" {
		return "", 0, errors.New("auth: issue access token: empty user or device id")
	}
	now := t.now()
	exp := jwt.NewNumericDate(now.Add(t.ttl))
	claims := accessClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    Issuer,
			Subject:   userID,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: exp,
		},
		DeviceID: deviceID,
	}
	token, err = jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(t.key)
	if err != nil {
		return "", 0, fmt.Errorf("auth: sign access token: %w", err)
	}
	return token, exp.Sub(now), nil
}

// ParseAccess checks token's algorithm (HS256 only), signature, issuer and expiry, and
// returns its claims. Every error wraps ErrInvalidToken; an expired token's also wraps
// ErrTokenExpired, so a client can be told to refresh.
func (t *Tokens) ParseAccess(token string) (Claims, error) {
	var c accessClaims
	_, err := t.parser.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return t.key, nil })
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return Claims{}, fmt.Errorf("auth: %w: %w", ErrInvalidToken, ErrTokenExpired)
	case err != nil:
		return Claims{}, fmt.Errorf("auth: %w: %w", ErrInvalidToken, err)
	case c.Subject == "" || c.DeviceID == "":
		return Claims{}, fmt.Errorf("auth: %w: no user or device id", ErrInvalidToken)
	}
	return Claims{UserID: c.Subject, DeviceID: c.DeviceID, ExpiresAt: c.ExpiresAt.Time}, nil
}
