package auth

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// Limits on account inputs.
const (
	UsernameMinLen    = 3   // characters
	UsernameMaxLen    = 32  // characters
	PasswordMinLen    = 8   // bytes
	PasswordMaxLen    = 256 // bytes: bounds the work of hashing
	DisplayNameMaxLen = 64  // characters (runes)
)

// NormalizeUsername returns s trimmed of surrounding white space and lower-cased: the form
// that is stored and compared. Validate the result with ValidateUsername.
func NormalizeUsername(s string) string { return strings.ToLower(strings.TrimSpace(s)) }

// ValidateUsername checks a normalized username: 3 to 32 characters, only lowercase letters
// a–z, digits, '_', '.' and '-', starting with a letter. ASCII only, so that two names that
// look alike are alike. The *ValidationError names the first rule broken.
func ValidateUsername(s string) error {
	invalid := func(format string, args ...any) error {
		return &ValidationError{Field: "username", Message: fmt.Sprintf(format, args...)}
	}
	if s == "" {
		return invalid("username is required")
	}
	n := utf8.RuneCountInString(s)
	if n < UsernameMinLen {
		return invalid("username must be at least %d characters long; %q has %d", UsernameMinLen, s, n)
	}
	if n > UsernameMaxLen {
		return invalid("username must be at most %d characters long; this one has %d", UsernameMaxLen, n)
	}
	pos := 0
	for _, r := range s {
		pos++
		switch {
		case r >= 'a' && r <= 'z':
			continue
		case pos == 1 && r >= 'A' && r <= 'Z':
			return invalid("username must be lowercase: it starts with %q", r)
		case pos == 1:
			return invalid("username must start with a letter a–z, not %q", r)
		case r >= '0' && r <= '9', r == '_', r == '.', r == '-':
			continue
		case r >= 'A' && r <= 'Z':
			return invalid("username must be lowercase: %q at position %d is uppercase", r, pos)
		default:
			return invalid("username may contain only letters a–z, digits 0–9, '_', '.' and '-'; %q at position %d is not allowed", r, pos)
		}
	}
	return nil
}

// ValidatePassword checks a new password: 8 to 256 bytes, and not only white space. (Its
// strength beyond that is the user's choice; the upper bound keeps hashing cheap to bound.)
func ValidatePassword(s string) error {
	invalid := func(format string, args ...any) error {
		return &ValidationError{Field: "password", Message: fmt.Sprintf(format, args...)}
	}
	switch {
	case len(s) < PasswordMinLen:
		return invalid("password must be at least %d characters long", PasswordMinLen)
	case len(s) > PasswordMaxLen:
		return invalid("password must be at most %d bytes long; this one has %d", PasswordMaxLen, len(s))
	case strings.TrimSpace(s) == "":
		return invalid("password must not be only spaces")
	}
	return nil
}

// CleanName returns a display name or group name as it is stored: NFC-normalised (so that
// the same name typed on two systems is the same string) and trimmed. It refuses, naming
// field, a name that is not UTF-8, longer than max characters, holds control characters or
// bidirectional overrides, embeddings or isolates (U+202A–U+202E, U+2066–U+2069: they make
// "gpj.exe" read as "exe.jpg" and spill into the text around the name), or nothing but
// invisible characters and spaces. An empty result is returned as is: the caller decides
// what no name means.
func CleanName(field, s string, max int) (string, error) {
	invalid := func(format string, args ...any) error {
		return &ValidationError{Field: field, Message: fmt.Sprintf(format, args...)}
	}
	if !utf8.ValidString(s) {
		return "", invalid("%s must be valid UTF-8 text", field)
	}
	s = strings.TrimSpace(norm.NFC.String(s))
	if n := utf8.RuneCountInString(s); n > max {
		return "", invalid("%s must be at most %d characters long; this one has %d", field, max, n)
	}
	visible := s == ""
	pos := 0
	for _, r := range s {
		pos++
		switch {
		case unicode.IsControl(r):
			return "", invalid("%s must not contain control characters; U+%04X at position %d is one", field, r, pos)
		case isBidiControl(r):
			return "", invalid("%s must not contain bidirectional controls; U+%04X at position %d is one", field, r, pos)
		case !isInvisible(r):
			visible = true
		}
	}
	if !visible {
		return "", invalid("%s must contain a visible character", field)
	}
	return s, nil
}

// isBidiControl reports the explicit directional embeddings, overrides and isolates.
func isBidiControl(r rune) bool {
	return (r >= 0x202A && r <= 0x202E) || (r >= 0x2066 && r <= 0x2069)
}

// isInvisible reports characters that draw nothing: spaces, format characters (zero-width
// space and joiners, marks), combining marks on their own, and the blank fillers that
// scripts define (Hangul fillers, the blank Braille pattern).
func isInvisible(r rune) bool {
	switch r {
	case 0x115F, 0x1160, 0x3164, 0xFFA0, 0x2800, 0x034F:
		return true
	}
	return unicode.IsSpace(r) || unicode.In(r, unicode.Cf, unicode.Mn, unicode.Me)
}
