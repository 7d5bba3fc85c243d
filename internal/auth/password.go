package auth

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Params are argon2id's cost parameters. They are written into every hash, so they can be
// raised later without breaking the hashes made before (see NeedsRehash).
type Params struct {
	// Memory is in KiB.
	Memory uint32
	// Time is the number of passes over the memory.
	Time uint32
	// Threads is the degree of parallelism.
	Threads uint8
}

// DefaultParams returns OWASP's recommended argon2id parameters: 19 MiB, 2 passes, 1 thread
// (about 20-30 ms per hash on a server core). It is a function, not a variable, so that no
// package can change the defaults of another.
func DefaultParams() Params { return Params{Memory: 19456, Time: 2, Threads: 1} }

const (
	saltLen = 16 // bytes; PHC recommends at least 16
	keyLen  = 32 // bytes of derived hash

	// Bounds on parameters, checked on hashing and on parsing a stored hash, so that a
	// corrupt or planted hash cannot make one login allocate gigabytes or spin for hours.
	maxMemory  = 1 << 22 // KiB = 4 GiB
	maxTime    = 1000
	minSaltLen = 8
	maxSaltLen = 64
	minKeyLen  = 16
	maxKeyLen  = 128
)

// ErrMalformedHash is wrapped by VerifyPassword and NeedsRehash when the stored string is
// not an argon2id PHC string this package can read.
var ErrMalformedHash = errors.New("malformed password hash")

func (p Params) validate() error {
	switch {
	case p.Threads < 1:
		return errors.New("threads must be at least 1")
	case p.Time < 1 || p.Time > maxTime:
		return fmt.Errorf("time must be 1 to %d, got %d", maxTime, p.Time)
	case p.Memory < 8*uint32(p.Threads) || p.Memory > maxMemory:
		return fmt.Errorf("memory must be %d (8 KiB per thread) to %d KiB, got %d", 8*uint32(p.Threads), maxMemory, p.Memory)
	}
	return nil
}

// HashPassword hashes password with argon2id, a fresh random salt and p, and returns the PHC
// string "$argon2id$v=19$m=<KiB>,t=<passes>,p=<threads>$<salt>$<hash>".
func HashPassword(p Params, password string) (string, error) {
	if err := p.validate(); err != nil {
		return "", fmt.Errorf("auth: hash password: invalid argon2id parameters: %w", err)
	}
	salt := make([]byte, saltLen)
	_, _ = rand.Read(salt) // crypto/rand.Read never fails (it crashes the program instead)
	key := argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, keyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, p.Memory, p.Time, p.Threads, base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key)), nil
}

// VerifyPassword reports whether password matches encoded, a string made by HashPassword
// with any Params. The comparison takes constant time. A malformed encoded returns false and
// an error wrapping ErrMalformedHash; a wrong password returns false and nil.
func VerifyPassword(encoded, password string) (bool, error) {
	h, err := parseHash(encoded)
	if err != nil {
		return false, fmt.Errorf("auth: verify password: %w", err)
	}
	key := argon2.IDKey([]byte(password), h.salt, h.params.Time, h.params.Memory, h.params.Threads, uint32(len(h.key)))
	return subtle.ConstantTimeCompare(key, h.key) == 1, nil
}

// NeedsRehash reports whether encoded was made with parameters other than p (or is
// unreadable), so that a login that has just verified the password can store a new hash.
func NeedsRehash(encoded string, p Params) bool {
	h, err := parseHash(encoded)
	return err != nil || h.params != p || len(h.salt) != saltLen || len(h.key) != keyLen
}

type parsedHash struct {
	params    Params
	salt, key []byte
}

// parseHash reads a PHC argon2id string strictly: parameters in the order m, t, p, within
// bounds, and unpadded standard base64.
func parseHash(encoded string) (parsedHash, error) {
	var h parsedHash
	bad := func(format string, args ...any) (parsedHash, error) {
		return parsedHash{}, fmt.Errorf("%w: %s", ErrMalformedHash, fmt.Sprintf(format, args...))
	}
	parts := strings.Split(encoded, "$")
	if len(parts) != 6 || parts[0] != "" {
		return bad("want $argon2id$v=19$m=…,t=…,p=…$<salt>$<hash>, got %d '$'-separated fields", len(parts)-1)
	}
	if parts[1] != "argon2id" {
		return bad("algorithm %q, want argon2id", parts[1])
	}
	if parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return bad("version %q, want v=%d", parts[2], argon2.Version)
	}
	kv := strings.Split(parts[3], ",")
	if len(kv) != 3 {
		return bad("parameters %q, want m=…,t=…,p=…", parts[3])
	}
	var vals [3]uint64
	for i, name := range []string{"m", "t", "p"} {
		v, ok := strings.CutPrefix(kv[i], name+"=")
		if !ok {
			return bad("parameter %d is %q, want %s=…", i+1, kv[i], name)
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return bad("parameter %s: %v", name, err)
		}
		vals[i] = n
	}
	if vals[2] > 255 {
		return bad("parameter p=%d, want at most 255", vals[2])
	}
	h.params = Params{Memory: uint32(vals[0]), Time: uint32(vals[1]), Threads: uint8(vals[2])}
	if err := h.params.validate(); err != nil {
		return bad("%v", err)
	}
	// The PHC string format's base64: standard alphabet, no padding.
	b64 := base64.RawStdEncoding.Strict()
	var err error
	if h.salt, err = b64.DecodeString(parts[4]); err != nil {
		return bad("salt: %v", err)
	}
	if len(h.salt) < minSaltLen || len(h.salt) > maxSaltLen {
		return bad("salt is %d bytes, want %d to %d", len(h.salt), minSaltLen, maxSaltLen)
	}
	if h.key, err = b64.DecodeString(parts[5]); err != nil {
		return bad("hash: %v", err)
	}
	if len(h.key) < minKeyLen || len(h.key) > maxKeyLen {
		return bad("hash is %d bytes, want %d to %d", len(h.key), minKeyLen, maxKeyLen)
	}
	return h, nil
}
