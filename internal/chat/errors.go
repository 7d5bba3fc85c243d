package chat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"time"

	"github.com/parley-chat/parley/internal/limit"
	"github.com/parley-chat/parley/internal/store"
	"github.com/parley-chat/parley/protocol"
)

// Error is a failure a client can act on: Code is one of protocol's error codes, Message says
// which operation on which thing failed.
type Error struct {
	Code    string
	Message string
	// RetryAfter is set on rate_limited errors: when the client may try again.
	RetryAfter time.Duration
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Errorf returns an *Error with the given code.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrClosed is returned for work submitted after Close began.
var ErrClosed = &Error{Code: protocol.CodeUnavailable, Message: "server is shutting down"}

// Limited is a rate_limited error that says when to retry.
func Limited(retryAfter time.Duration, format string, args ...any) *Error {
	e := Errorf(protocol.CodeRateLimited, format, args...)
	e.RetryAfter = retryAfter
	return e
}

// RetryAfter is the wait a rate_limited err asks for, or 0.
func RetryAfter(err error) time.Duration {
	var ce *Error
	var ex *limit.Exceeded
	switch {
	case errors.As(err, &ce):
		return ce.RetryAfter
	case errors.As(err, &ex):
		return ex.RetryAfter
	}
	return 0
}

// Code maps any error from chat, store or the context to a protocol error code and a message
// that is safe to show a client. Unknown errors become "internal" with a generic message:
// their details belong in the server log, not on the wire.
func Code(err error) (code, message string) {
	var ce *Error
	var ex *limit.Exceeded
	switch {
	case errors.As(err, &ce):
		return ce.Code, ce.Message
	case errors.As(err, &ex):
		return protocol.CodeRateLimited, ex.Error()
	case errors.Is(err, limit.ErrUnavailable):
		return protocol.CodeUnavailable, "the server cannot check its limits now; try again shortly"
	case errors.Is(err, store.ErrUnavailable):
		return protocol.CodeUnavailable, "the server cannot store anything now; try again later"
	case errors.Is(err, store.ErrBadCursor):
		return protocol.CodeBadRequest, "cursor is not one this server gave out"
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

// DecodeError words a JSON decoding error of what ("request body", "frame") in the protocol's
// terms: the JSON field and the type it takes, never Go's names for them, which say nothing
// to a client written in another language.
func DecodeError(what string, err error) *Error {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr):
		if typeErr.Field == "" {
			return Errorf(protocol.CodeBadRequest, "%s must be a JSON object, not %s", what, jsonValueName(typeErr.Value))
		}
		return Errorf(protocol.CodeBadRequest, "field %q must be %s, not %s", Clip(typeErr.Field), jsonTypeName(typeErr.Type), jsonValueName(typeErr.Value))
	case errors.As(err, &syntaxErr):
		return Errorf(protocol.CodeBadRequest, "%s is not valid JSON (at byte %d)", what, syntaxErr.Offset)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return Errorf(protocol.CodeBadRequest, "%s is not valid JSON (it ends too soon)", what)
	default:
		return Errorf(protocol.CodeBadRequest, "%s is not valid JSON", what)
	}
}

// jsonTypeName names the JSON type a Go type is decoded from.
func jsonTypeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Pointer:
		return jsonTypeName(t.Elem())
	default:
		return "an object"
	}
}

// jsonValueName turns UnmarshalTypeError.Value ("number", "string", "number 1.5") into words.
func jsonValueName(v string) string {
	kind, _, _ := strings.Cut(v, " ")
	switch kind {
	case "array", "object":
		return "an " + kind
	case "bool":
		return "true or false"
	case "":
		return "that"
	default:
		return "a " + kind
	}
}
