package auth

import (
	"errors"
	"strings"
	"testing"
)

// checkValidation runs fn on each case: want == "" means valid, otherwise the error must be
// a *ValidationError for field whose message contains want.
func checkValidation(t *testing.T, fn func(string) error, field string, cases []struct{ in, want string }) {
	t.Helper()
	for _, c := range cases {
		err := fn(c.in)
		if c.want == "" {
			if err != nil {
				t.Errorf("%.40q: unexpected error %v", c.in, err)
			}
			continue
		}
		var ve *ValidationError
		if !errors.As(err, &ve) {
			t.Errorf("%.40q: got %v, want a *ValidationError", c.in, err)
			continue
		}
		if ve.Field != field || !strings.Contains(ve.Message, c.want) {
			t.Errorf("%.40q: got %s: %q, want %s: …%s…", c.in, ve.Field, ve.Message, field, c.want)
		}
	}
}

func TestValidateUsername(t *testing.T) {
	checkValidation(t, ValidateUsername, "username", []struct{ in, want string }{
		{"alice", ""},
		{"abc", ""},
		{"a.b-c_d9", ""},
		{"z" + strings.Repeat("9", 31), ""},
		{"", "required"},
		{"ab", "at least 3 characters"},
		{"a" + strings.Repeat("b", 32), "at most 32 characters"},
		{"1alice", "start with a letter a–z, not '1'"},
		{"_alice", "start with a letter"},
		{".alice", "start with a letter"},
		{"älice", "start with a letter"},
		{"Alice", "must be lowercase"},
		{"alIce", "'I' at position 3 is uppercase"},
		{"al ice", "' ' at position 3 is not allowed"},
		{"alé", "'é' at position 3 is not allowed"},
		{"al@ce", "only letters a–z, digits 0–9"},
	})
}

func TestNormalizeUsername(t *testing.T) {
	for in, want := range map[string]string{
		"  Alice  ":  "alice",
		"BOB":        "bob",
		"\tcarol\n":  "carol",
		"already.ok": "already.ok",
	} {
		if got := NormalizeUsername(in); got != want {
			t.Errorf("NormalizeUsername(%q) = %q, want %q", in, got, want)
		}
		if err := ValidateUsername(NormalizeUsername(in)); err != nil {
			t.Errorf("normalized %q is invalid: %v", in, err)
		}
	}
}

func TestValidatePassword(t *testing.T) {
	checkValidation(t, ValidatePassword, "password", []struct{ in, want string }{
		{"12345678", ""},
		{"correct horse battery staple", ""},
		{"  spaces around  ", ""},
		{strings.Repeat("x", 256), ""},
		{"", "at least 8"},
		{"1234567", "at least 8"},
		{strings.Repeat("x", 257), "at most 256 bytes"},
		{"        ", "only spaces"},
		{"\t\n \t\n \t\n", "only spaces"},
	})
	// The message never echoes the password.
	err := ValidatePassword("sekrit1")
	if err == nil || strings.Contains(err.Error(), "sekrit1") {
		t.Errorf("error %v repeats the password", err)
	}
}

func TestDisplayNameRules(t *testing.T) {
	clean := func(s string) error { _, err := CleanName("display_name", s, DisplayNameMaxLen); return err }
	checkValidation(t, clean, "display_name", []struct{ in, want string }{
		{"", ""},
		{"Alice", ""},
		{"Zoë 🦊", ""},
		{"👩‍👩‍👧 family", ""}, // zero-width joiners are format characters, not control ones
		{strings.Repeat("é", 64), ""},
		{strings.Repeat("é", 65), "at most 64 characters"},
		{"line\nbreak", "U+000A at position 5"},
		{"tab\there", "control characters"},
		{"nul\x00", "control characters"},
		{"esc\x1b[31m", "control characters"},
		{"c\u00851", "control characters"}, // inside: at the end, U+0085 is white space, trimmed as the API always did
		{"bad\xffutf8", "valid UTF-8"},
	})
}

func TestCleanName(t *testing.T) {
	tests := []struct {
		name, in, want, err string
	}{
		{"plain", "Alice", "Alice", ""},
		{"trimmed", "  Alice \n", "Alice", ""},
		{"NFC", "Rene\u0301", "Ren\u00e9", ""},
		{"empty stays empty", "   ", "", ""},
		{"emoji", "🦊 fox", "🦊 fox", ""},
		{"right-to-left script", "שלום", "שלום", ""},
		{"joiner inside visible text", "👩\u200d💻", "👩\u200d💻", ""},
		{"RLO", "abc\u202egpj.exe", "", "bidirectional"},
		{"LRE", "\u202aabc", "", "bidirectional"},
		{"isolate", "a\u2066b", "", "bidirectional"},
		{"PDI", "a\u2069", "", "bidirectional"},
		{"zero-width only", "\u200b\u200c\u200d", "", "visible"},
		{"Hangul filler only", "\u3164", "", "visible"},
		{"braille blank only", "\u2800 \u2800", "", "visible"},
		{"combining mark only", "\u0301", "", "visible"},
		{"control", "a\x07b", "", "control"},
		{"newline inside", "a\nb", "", "control"},
		{"not UTF-8", "a\xffb", "", "UTF-8"},
		{"too long", strings.Repeat("é", 65), "", "at most 64"},
		{"64 after NFC", strings.Repeat("e\u0301", 64), strings.Repeat("\u00e9", 64), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := CleanName("display_name", tt.in, 64)
			if tt.err == "" {
				if err != nil || got != tt.want {
					t.Fatalf("CleanName(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) || !strings.Contains(err.Error(), "display_name") {
				t.Fatalf("CleanName(%q) = %q, %v; want an error about %s naming the field", tt.in, got, err, tt.err)
			}
		})
	}
}
