package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
)

// refreshTokenLen is the random bytes in a refresh token: 256 bits.
const refreshTokenLen = 32

// NewRefreshToken returns a new opaque refresh token (32 random bytes, unpadded base64url)
// for the client, and its hash (HashRefreshToken) for the store. Only the hash is stored, so
// a leaked database does not hand out sessions.
func NewRefreshToken() (token, hash string, err error) {
	token = RandomToken()
	return token, HashRefreshToken(token), nil
}

// RandomToken returns 32 random bytes as unpadded base64url: an unguessable one-time value
// (refresh tokens, WebSocket tickets).
func RandomToken() string {
	b := make([]byte, refreshTokenLen)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (it crashes the program instead)
	return base64.RawURLEncoding.EncodeToString(b)
}

// HashRefreshToken returns the hex SHA-256 of token, the form refresh tokens are stored and
// looked up in. A fast hash is right here, unlike for passwords: a refresh token carries 256
// random bits, so no guessing or dictionary attack on the hash can succeed however fast the
// hash is, and a slow hash would only slow down every refresh. No salt either: the lookup by
// hash needs it deterministic, and salts protect low-entropy secrets only.
func HashRefreshToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}
