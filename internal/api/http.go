package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/parley-chat/parley/internal/chat"
	"github.com/parley-chat/parley/protocol"
)

// maxRequestBody bounds every JSON request body.
const maxRequestBody = 1 << 20

type ctxKey int

const (
	keyRequestID ctxKey = iota
	keyCaller
)

// caller is the authenticated user and device of a request.
type caller struct {
	userID, deviceID string
}

func callerOf(r *http.Request) caller {
	c, _ := r.Context().Value(keyCaller).(caller)
	return c
}

func requestID(ctx context.Context) string {
	id, _ := ctx.Value(keyRequestID).(string)
	return id
}

// statusWriter records the status code for the access log.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection (the WebSocket upgrade hijacks).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// WithRequestLog gives every request an id (echoed in X-Request-Id, carried by every log line
// about it) and logs failures; successful requests are logged at debug level only, to keep
// the hot path quiet.
func WithRequestLog(log *slog.Logger, next http.Handler) http.Handler {
	var n atomic.Uint64
	prefix := strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Request-Id")
		if id == "" || len(id) > 64 {
			id = prefix + "-" + strconv.FormatUint(n.Add(1), 36)
		}
		w.Header().Set("X-Request-Id", id)
		sw := &statusWriter{ResponseWriter: w}
		start := time.Now()
		next.ServeHTTP(sw, r.WithContext(context.WithValue(r.Context(), keyRequestID, id)))
		level := slog.LevelDebug
		if sw.status >= 500 && sw.status != http.StatusServiceUnavailable {
			// Not 503: draining or a full disk answer every request so, and their cause
			// is logged once where it is found.
			level = slog.LevelError
		}
		log.Log(r.Context(), level, "http", "request_id", id, "method", r.Method, "path", r.URL.Path,
			"status", sw.status, "duration_ms", time.Since(start).Milliseconds())
	})
}

var httpStatus = map[string]int{
	protocol.CodeBadRequest:       http.StatusBadRequest,
	protocol.CodeUnauthorized:     http.StatusUnauthorized,
	protocol.CodeForbidden:        http.StatusForbidden,
	protocol.CodeNotFound:         http.StatusNotFound,
	protocol.CodeConflict:         http.StatusConflict,
	protocol.CodeTooLarge:         http.StatusRequestEntityTooLarge,
	protocol.CodeRateLimited:      http.StatusTooManyRequests,
	protocol.CodeUnavailable:      http.StatusServiceUnavailable,
	protocol.CodeInternal:         http.StatusInternalServerError,
	protocol.CodeMethodNotAllowed: http.StatusMethodNotAllowed,
}

// writeError answers err with its status and {"error":{code,message}}. Internal errors are
// logged with the request id; the client gets only a generic message. rate_limited carries
// Retry-After (seconds, rounded up) and retry_after_ms.
func (a *API) writeError(w http.ResponseWriter, r *http.Request, err error) {
	code, msg := chat.Code(err)
	if code == protocol.CodeInternal {
		a.log.Error("request failed", "request_id", requestID(r.Context()), "method", r.Method, "path", r.URL.Path, "err", err)
	}
	status := httpStatus[code]
	if status == 0 {
		status = http.StatusInternalServerError
	}
	body := protocol.Error{Code: code, Message: msg}
	if code == protocol.CodeRateLimited {
		wait := max(chat.RetryAfter(err), time.Millisecond)
		body.RetryAfterMS = wait.Milliseconds()
		if w.Header().Get("Retry-After") == "" {
			w.Header().Set("Retry-After", strconv.FormatInt(int64((wait+time.Second-1)/time.Second), 10))
		}
	}
	writeJSON(w, status, protocol.ErrorBody{Error: body})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// maxAuthBody bounds the bodies of requests made before authentication (signup, login,
// refresh): what a stranger sends is read into memory, so it must be small.
const maxAuthBody = 64 << 10

// readJSON decodes the request body into v, with a size limit and errors a client can act on.
func readJSON(r *http.Request, v any) error { return decodeBody(r, v, maxRequestBody) }

// readAuthJSON is readJSON for requests from strangers.
func readAuthJSON(r *http.Request, v any) error { return decodeBody(r, v, maxAuthBody) }

func decodeBody(r *http.Request, v any, limit int64) error {
	body := http.MaxBytesReader(nil, r.Body, limit)
	dec := json.NewDecoder(body)
	err := dec.Decode(v)
	if err == nil {
		// One JSON value and nothing after it but white space.
		if _, terr := dec.Token(); terr != io.EOF {
			err = errTrailing
		}
	}
	return bodyError(err, limit)
}

var errTrailing = errors.New("trailing data after the JSON object")

// bodyError words a decoding error in the API's terms (chat.DecodeError).
func bodyError(err error, limit int64) error {
	var tooLarge *http.MaxBytesError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &tooLarge):
		return chat.Errorf(protocol.CodeTooLarge, "request body is larger than %d bytes", limit)
	case errors.Is(err, io.EOF):
		return chat.Errorf(protocol.CodeBadRequest, "request body is empty; expected a JSON object")
	case errors.Is(err, errTrailing):
		return chat.Errorf(protocol.CodeBadRequest, "request body has data after the JSON object")
	default:
		return chat.DecodeError("request body", err)
	}
}

// queryInt parses an optional non-negative integer query parameter.
func queryInt(r *http.Request, name string, def int64) (int64, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return def, nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 {
		return 0, chat.Errorf(protocol.CodeBadRequest, "%s must be a non-negative integer, got %q", name, s)
	}
	return v, nil
}

// pageLimit reads ?limit= (default 50, at most 200).
func pageLimit(r *http.Request) (int, error) {
	l, err := queryInt(r, "limit", 50)
	if err != nil {
		return 0, err
	}
	if l == 0 {
		l = 50
	}
	return int(min(l, 200)), nil
}
