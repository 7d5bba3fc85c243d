package auth

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// FuzzParseAccess: no string but a token this key issued (and has not expired) is accepted,
// and nothing a client puts in the Authorization header makes parsing panic.
func FuzzParseAccess(f *testing.F) {
	key := []byte(strings.Repeat("k", KeyLen))
	now := time.Unix(1_800_000_000, 0)
	tokens, err := NewTokens(key, 15*time.Minute, func() time.Time { return now })
	if err != nil {
		f.Fatal(err)
	}
	good, _, err := tokens.IssueAccess("u1", "d1")
	if err != nil {
		f.Fatal(err)
	}
	other, _ := NewTokens([]byte(strings.Repeat("o", KeyLen)), 15*time.Minute, func() time.Time { return now })
	forged, _, _ := other.IssueAccess("u1", "d1")
	for _, s := range []string{good, forged, "", "a.b.c", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1MSJ9.",
		good[:len(good)-2], strings.Replace(good, ".", "..", 1)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, token string) {
		c, err := tokens.ParseAccess(token)
		if err == nil && token != good {
			// HS256 is deterministic and decoding strict: the same claims signed by the same
			// key are the same string, so anything else accepted is a forgery.
			t.Fatalf("ParseAccess accepted %q (claims %+v)", token, c)
		}
	})
}

// FuzzCleanName: a name that is accepted is stored NFC, trimmed, without control or
// bidirectional characters, within its length, and cleaning it again changes nothing.
func FuzzCleanName(f *testing.F) {
	for _, s := range []string{"Alice", "Rene\u0301", "a\u202eb", "\u200b", "\u3164", " x ", "\xff", "👩\u200d💻"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, err := CleanName("name", in, 64)
		if err != nil {
			return
		}
		if !utf8.ValidString(out) || !norm.NFC.IsNormalString(out) || strings.TrimSpace(out) != out || utf8.RuneCountInString(out) > 64 {
			t.Fatalf("CleanName(%q) = %q: not NFC, trimmed and within 64 characters", in, out)
		}
		for _, r := range out {
			if isBidiControl(r) || r < 0x20 || r == 0x7f {
				t.Fatalf("CleanName(%q) = %q keeps U+%04X", in, out, r)
			}
		}
		if again, err := CleanName("name", out, 64); err != nil || again != out {
			t.Fatalf("CleanName not idempotent: %q → %q → %q, %v", in, out, again, err)
		}
	})
}
