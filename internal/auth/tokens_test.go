package auth

import (
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// fakeClock is a settable clock, safe for concurrent use.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock(t time.Time) *fakeClock {
	c := &fakeClock{}
	c.ns.Store(t.UnixNano())
	return c
}

func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

var testEpoch = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

func newTestTokens(t *testing.T, key []byte, clock *fakeClock) *Tokens {
	t.Helper()
	tk, err := NewTokens(key, 15*time.Minute, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

// sign makes a token as an attacker or a buggy issuer might.
func sign(t *testing.T, method jwt.SigningMethod, key any, claims jwt.Claims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestIssueAndParseAccess(t *testing.T) {
	clock := newFakeClock(testEpoch.Add(300 * time.Millisecond))
	tk := newTestTokens(t, NewKey(), clock)
	tok, expiresIn, err := tk.IssueAccess("user-1", "dev-1")
	if err != nil {
		t.Fatal(err)
	}
	// The expiry is whole seconds: 15 min from issue, less the 300 ms the encoding drops.
	if want := 15*time.Minute - 300*time.Millisecond; expiresIn != want {
		t.Errorf("expiresIn = %s, want %s", expiresIn, want)
	}
	c, err := tk.ParseAccess(tok)
	if err != nil {
		t.Fatalf("ParseAccess: %v", err)
	}
	want := Claims{UserID: "user-1", DeviceID: "dev-1", ExpiresAt: testEpoch.Add(15 * time.Minute)}
	if c.UserID != want.UserID || c.DeviceID != want.DeviceID || !c.ExpiresAt.Equal(want.ExpiresAt) {
		t.Errorf("claims = %+v, want %+v", c, want)
	}
	// Valid until the last instant before expiry.
	clock.Advance(expiresIn - time.Nanosecond)
	if _, err := tk.ParseAccess(tok); err != nil {
		t.Errorf("1 ns before expiry: %v", err)
	}
}

func TestParseAccessRejects(t *testing.T) {
	key := NewKey()
	clock := newFakeClock(testEpoch)
	tk := newTestTokens(t, key, clock)
	good, _, err := tk.IssueAccess("user-1", "dev-1")
	if err != nil {
		t.Fatal(err)
	}
	other := newTestTokens(t, NewKey(), clock)
	otherTok, _, _ := other.IssueAccess("user-1", "dev-1")

	valid := func() accessClaims {
		return accessClaims{
			RegisteredClaims: jwt.RegisteredClaims{
				Issuer:    Issuer,
				Subject:   "user-1",
				IssuedAt:  jwt.NewNumericDate(testEpoch),
				ExpiresAt: jwt.NewNumericDate(testEpoch.Add(time.Hour)),
			},
			DeviceID: "dev-1",
		}
	}
	with := func(f func(*accessClaims)) accessClaims { c := valid(); f(&c); return c }

	seg := strings.Split(good, ".")
	// Payload of a token for someone else, with good's signature.
	forged := strings.Split(sign(t, jwt.SigningMethodHS256, NewKey(), with(func(c *accessClaims) { c.Subject = "admin" })), ".")
	tamperedPayload := seg[0] + "." + forged[1] + "." + seg[2]
	sig := []byte(seg[2])
	// Change a middle character to another base64url one: all its bits are signature bits
	// (the last character's low bits are padding, which a lenient decoder ignores).
	if sig[10] == 'A' {
		sig[10] = 'B'
	} else {
		sig[10] = 'A'
	}
	tamperedSig := seg[0] + "." + seg[1] + "." + string(sig)

	tests := []struct {
		name        string
		token       string
		wantExpired bool
	}{
		{"empty", "", false},
		{"garbage", "not.a.jwt", false},
		{"tampered payload", tamperedPayload, false},
		{"tampered signature", tamperedSig, false},
		{"signature stripped", seg[0] + "." + seg[1] + ".", false},
		{"wrong key", otherTok, false},
		{"alg none", sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, valid()), false},
		{"alg HS512 with the right key", sign(t, jwt.SigningMethodHS512, key, valid()), false},
		{"alg HS384 with the right key", sign(t, jwt.SigningMethodHS384, key, valid()), false},
		{"wrong issuer", sign(t, jwt.SigningMethodHS256, key, with(func(c *accessClaims) { c.Issuer = "evil" })), false},
		{"no issuer", sign(t, jwt.SigningMethodHS256, key, with(func(c *accessClaims) { c.Issuer = "" })), false},
		{"no expiry", sign(t, jwt.SigningMethodHS256, key, with(func(c *accessClaims) { c.ExpiresAt = nil })), false},
		{"no user", sign(t, jwt.SigningMethodHS256, key, with(func(c *accessClaims) { c.Subject = "" })), false},
		{"no device", sign(t, jwt.SigningMethodHS256, key, with(func(c *accessClaims) { c.DeviceID = "" })), false},
		{"expired", sign(t, jwt.SigningMethodHS256, key, with(func(c *accessClaims) { c.ExpiresAt = jwt.NewNumericDate(testEpoch) })), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := tk.ParseAccess(tt.token)
			if err == nil {
				t.Fatalf("ParseAccess accepted it: %+v", c)
			}
			if !errors.Is(err, ErrInvalidToken) {
				t.Errorf("error %v does not wrap ErrInvalidToken", err)
			}
			if got := errors.Is(err, ErrTokenExpired); got != tt.wantExpired {
				t.Errorf("errors.Is(%v, ErrTokenExpired) = %v, want %v", err, got, tt.wantExpired)
			}
		})
	}
	if _, err := tk.ParseAccess(good); err != nil {
		t.Errorf("the untampered token was rejected: %v", err)
	}
}

// TestAccessTokenExpiresWithClock: expiry is judged by the injected clock.
func TestAccessTokenExpiresWithClock(t *testing.T) {
	clock := newFakeClock(testEpoch)
	tk := newTestTokens(t, NewKey(), clock)
	tok, expiresIn, err := tk.IssueAccess("u", "d")
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(expiresIn)
	_, err = tk.ParseAccess(tok)
	if !errors.Is(err, ErrTokenExpired) || !errors.Is(err, ErrInvalidToken) {
		t.Errorf("at expiry: got %v, want ErrTokenExpired and ErrInvalidToken", err)
	}
}

func TestNewTokensRejectsBadConfig(t *testing.T) {
	if _, err := NewTokens(make([]byte, KeyLen-1), time.Minute, nil); err == nil {
		t.Error("NewTokens accepted a 31-byte key")
	}
	if _, err := NewTokens(NewKey(), 0, nil); err == nil {
		t.Error("NewTokens accepted a zero TTL")
	}
	key := NewKey()
	tk, err := NewTokens(key, time.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, _, _ := tk.IssueAccess("u", "d")
	clear(key) // the caller's slice is copied
	if _, err := tk.ParseAccess(tok); err != nil {
		t.Errorf("after the caller cleared its key: %v", err)
	}
	if _, _, err := tk.IssueAccess("", "d"); err == nil {
		t.Error("IssueAccess accepted an empty user id")
	}
}

func TestNewKey(t *testing.T) {
	a, b := NewKey(), NewKey()
	if len(a) != KeyLen || len(b) != KeyLen {
		t.Fatalf("key lengths %d, %d; want %d", len(a), len(b), KeyLen)
	}
	if string(a) == string(b) {
		t.Error("two keys are equal")
	}
}
