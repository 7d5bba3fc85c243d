package auth

import (
	"errors"
	"regexp"
	"strings"
	"testing"
)

// fastParams keep tests quick; the format and the checks do not depend on the cost.
var fastParams = Params{Memory: 64, Time: 1, Threads: 1}

func TestHashAndVerifyPassword(t *testing.T) {
	tests := []struct {
		name     string
		params   Params
		password string
	}{
		{"ascii", fastParams, "correct horse battery staple"},
		{"unicode", fastParams, "pässwörd 🦊 密码"},
		{"empty", fastParams, ""},
		{"max length", fastParams, strings.Repeat("x", PasswordMaxLen)},
		{"several threads", Params{Memory: 256, Time: 2, Threads: 4}, "threads"},
		{"default params", DefaultParams(), "owasp defaults"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			enc, err := HashPassword(tt.params, tt.password)
			if err != nil {
				t.Fatalf("HashPassword: %v", err)
			}
			ok, err := VerifyPassword(enc, tt.password)
			if err != nil || !ok {
				t.Errorf("VerifyPassword(right password) = %v, %v; want true, nil", ok, err)
			}
			ok, err = VerifyPassword(enc, tt.password+"x")
			if err != nil || ok {
				t.Errorf("VerifyPassword(wrong password) = %v, %v; want false, nil", ok, err)
			}
			again, _ := HashPassword(tt.params, tt.password)
			if again == enc {
				t.Error("two hashes of one password are equal: the salt is not random")
			}
		})
	}
}

func TestHashPasswordFormat(t *testing.T) {
	enc, err := HashPassword(DefaultParams(), "secret password")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`^\$argon2id\$v=19\$m=19456,t=2,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$`)
	if !re.MatchString(enc) {
		t.Errorf("hash %q does not match %s", enc, re)
	}
}

// TestVerifyPasswordReferenceVector checks interoperability with the argon2 reference
// implementation (phc-winner-argon2's test vector for argon2id, version 19).
func TestVerifyPasswordReferenceVector(t *testing.T) {
	const enc = "$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc"
	if ok, err := VerifyPassword(enc, "password"); err != nil || !ok {
		t.Errorf("VerifyPassword(reference vector) = %v, %v; want true, nil", ok, err)
	}
	if ok, err := VerifyPassword(enc, "Password"); err != nil || ok {
		t.Errorf("VerifyPassword(reference vector, wrong password) = %v, %v; want false, nil", ok, err)
	}
}

// TestOldParamsStillVerify: the cost parameters come from the stored string, so raising
// them does not lock out users, and NeedsRehash says when to upgrade.
func TestOldParamsStillVerify(t *testing.T) {
	old := Params{Memory: 128, Time: 3, Threads: 2}
	enc, err := HashPassword(old, "hunter22")
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := VerifyPassword(enc, "hunter22"); err != nil || !ok {
		t.Fatalf("VerifyPassword with old params = %v, %v", ok, err)
	}
	if !NeedsRehash(enc, DefaultParams()) {
		t.Error("NeedsRehash(old params, defaults) = false, want true")
	}
	if NeedsRehash(enc, old) {
		t.Error("NeedsRehash(old params, same params) = true, want false")
	}
	if !NeedsRehash("garbage", old) {
		t.Error("NeedsRehash(garbage) = false, want true")
	}
}

func TestVerifyPasswordMalformed(t *testing.T) {
	good, err := HashPassword(fastParams, "pw")
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(good, "$") // "", argon2id, v=19, m=…, salt, hash
	salt, hash := parts[4], parts[5]
	tests := []struct {
		name, encoded, wantInErr string
	}{
		{"empty", "", "fields"},
		{"not phc", "plaintext-password", "fields"},
		{"bcrypt", "$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy", "fields"},
		{"argon2i", "$argon2i$v=19$m=64,t=1,p=1$" + salt + "$" + hash, "algorithm"},
		{"old version", "$argon2id$v=16$m=64,t=1,p=1$" + salt + "$" + hash, "version"},
		{"no version", "$argon2id$m=64,t=1,p=1$" + salt + "$" + hash, "fields"},
		{"params out of order", "$argon2id$v=19$t=1,m=64,p=1$" + salt + "$" + hash, "want m="},
		{"missing param", "$argon2id$v=19$m=64,t=1$" + salt + "$" + hash, "m=…,t=…,p=…"},
		{"non-numeric", "$argon2id$v=19$m=lots,t=1,p=1$" + salt + "$" + hash, "parameter m"},
		{"zero time", "$argon2id$v=19$m=64,t=0,p=1$" + salt + "$" + hash, "time"},
		{"zero threads", "$argon2id$v=19$m=64,t=1,p=0$" + salt + "$" + hash, "threads"},
		{"too many threads", "$argon2id$v=19$m=64000,t=1,p=300$" + salt + "$" + hash, "at most 255"},
		{"too little memory", "$argon2id$v=19$m=7,t=1,p=1$" + salt + "$" + hash, "memory"},
		{"absurd memory", "$argon2id$v=19$m=4294967295,t=1,p=1$" + salt + "$" + hash, "memory"},
		{"absurd time", "$argon2id$v=19$m=64,t=4294967295,p=1$" + salt + "$" + hash, "time"},
		{"bad salt base64", "$argon2id$v=19$m=64,t=1,p=1$!!!!$" + hash, "salt"},
		{"padded salt", "$argon2id$v=19$m=64,t=1,p=1$" + salt + "==$" + hash, "salt"},
		{"short salt", "$argon2id$v=19$m=64,t=1,p=1$c2FsdA$" + hash, "salt is 4 bytes"},
		{"bad hash base64", "$argon2id$v=19$m=64,t=1,p=1$" + salt + "$%%%", "hash"},
		{"short hash", "$argon2id$v=19$m=64,t=1,p=1$" + salt + "$c2FsdA", "hash is 4 bytes"},
		{"extra field", good + "$x", "fields"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, err := VerifyPassword(tt.encoded, "pw")
			if ok {
				t.Error("VerifyPassword = true on a malformed hash")
			}
			if !errors.Is(err, ErrMalformedHash) {
				t.Fatalf("error %v does not wrap ErrMalformedHash", err)
			}
			if !strings.Contains(err.Error(), tt.wantInErr) {
				t.Errorf("error %q does not mention %q", err, tt.wantInErr)
			}
		})
	}
}

func TestHashPasswordRejectsBadParams(t *testing.T) {
	for _, p := range []Params{
		{},
		{Memory: 64, Time: 0, Threads: 1},
		{Memory: 64, Time: 1, Threads: 0},
		{Memory: 15, Time: 1, Threads: 2},
		{Memory: maxMemory + 1, Time: 1, Threads: 1},
	} {
		if _, err := HashPassword(p, "pw"); err == nil {
			t.Errorf("HashPassword(%+v) succeeded, want an error", p)
		}
	}
}

func BenchmarkVerifyPassword(b *testing.B) {
	enc, err := HashPassword(DefaultParams(), "correct horse battery staple")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if ok, err := VerifyPassword(enc, "correct horse battery staple"); !ok || err != nil {
			b.Fatal(ok, err)
		}
	}
}
