package auth

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
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

// ValidateDisplayName checks a display name: valid UTF-8, at most 64 characters, no control
// characters (newlines, tabs, escapes), which would break how other clients lay it out. An
// empty name is valid: the caller decides what an absent name means.
func ValidateDisplayName(s string) error {
	invalid := func(format string, args ...any) error {
		return &ValidationError{Field: "display_name", Message: fmt.Sprintf(format, args...)}
	}
	if !utf8.ValidString(s) {
		return invalid("display name must be valid UTF-8 text")
	}
	if n := utf8.RuneCountInString(s); n > DisplayNameMaxLen {
		return invalid("display name must be at most %d characters long; this one has %d", DisplayNameMaxLen, n)
	}
	pos := 0
	for _, r := range s {
		pos++
		if unicode.IsControl(r) {
			return invalid("display name must not contain control characters; U+%04X at position %d is one", r, pos)
		}
	}
	return nil
}
