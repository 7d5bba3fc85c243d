package chat

import (
	"context"
	"errors"
	"fmt"

	"github.com/parley-chat/parley/internal/store"
	"github.com/parley-chat/parley/protocol"
)

// Error is a failure a client can act on: Code is one of protocol's error codes, Message says
// which operation on which thing failed.
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Errorf returns an *Error with the given code.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrClosed is returned for work submitted after Close began.
var ErrClosed = &Error{Code: protocol.CodeUnavailable, Message: "server is shutting down"}

// Code maps any error from chat, store or the context to a protocol error code and a message
// that is safe to show a client. Unknown errors become "internal" with a generic message:
// their details belong in the server log, not on the wire.
func Code(err error) (code, message string) {
	var ce *Error
	switch {
	case errors.As(err, &ce):
		return ce.Code, ce.Message
	case errors.Is(err, store.ErrNotMember):
		return protocol.CodeForbidden, "not a member of this conversation"
	case errors.Is(err, store.ErrNotFound):
		return protocol.CodeNotFound, "not found"
	case errors.Is(err, store.ErrConflict):
		return protocol.CodeConflict, "already exists"
	case errors.Is(err, store.ErrClosed), errors.Is(err, context.Canceled):
		return protocol.CodeUnavailable, "server is shutting down"
	case errors.Is(err, context.DeadlineExceeded):
		return protocol.CodeUnavailable, "timed out"
	default:
		return protocol.CodeInternal, "internal error"
	}
}
