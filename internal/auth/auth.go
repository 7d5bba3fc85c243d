// Package auth holds the cryptography and rules of Parley accounts: password hashing,
// input validation, access tokens (JWT), refresh tokens and one-time WebSocket tickets.
// It stores nothing durable: callers keep password hashes and refresh-token hashes in the
// store, and tickets live in memory for their few seconds.
package auth

// ValidationError says which rule an input broke, in words meant for the person who typed
// it: the HTTP layer can answer bad_request with Message as is.
type ValidationError struct {
	// Field is the input's name in the API: "username", "password" or "display_name".
	Field string
	// Message is a complete sentence naming the rule, e.g. "username must start with a
	// letter a–z, not '4'". It never repeats a password.
	Message string
}

func (e *ValidationError) Error() string { return e.Message }
