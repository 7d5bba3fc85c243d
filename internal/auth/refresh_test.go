package auth

import (
	"encoding/base64"
	"regexp"
	"testing"
)

func TestNewRefreshToken(t *testing.T) {
	tok, hash, err := NewRefreshToken()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || len(raw) != 32 {
		t.Errorf("token %q: %d bytes, %v; want 32 bytes of unpadded base64url", tok, len(raw), err)
	}
	if hash != HashRefreshToken(tok) {
		t.Errorf("hash %q != HashRefreshToken(token) %q", hash, HashRefreshToken(tok))
	}
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(hash) {
		t.Errorf("hash %q is not 64 lower-case hex digits", hash)
	}
	tok2, hash2, _ := NewRefreshToken()
	if tok2 == tok || hash2 == hash {
		t.Error("two refresh tokens are equal")
	}
}

func TestHashRefreshToken(t *testing.T) {
	for in, want := range map[string]string{
		"abc": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", // FIPS 180-2 vector
		"":    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
	} {
		if got := HashRefreshToken(in); got != want {
			t.Errorf("HashRefreshToken(%q) = %s, want %s", in, got, want)
		}
	}
}
