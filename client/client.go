// Package client is Parley's Go SDK: a REST client for /api/v1 (Client) and a self-healing
// WebSocket connection (Conn) on top of it. The `parley chat` CLI, the `parley bench` load
// generator and the integration tests all use it, so it is built to be correct under
// concurrency and reconnects and cheap per message.
//
// A Client holds one device's tokens. Every authenticated call that answers 401 refreshes the
// tokens once and retries, and concurrent 401s share a single refresh: the server rotates the
// refresh token on every refresh, so two refreshes racing with the same token would log the
// device out.
//
// A Conn (from Client.Connect) reconnects by itself, resends unacknowledged frames with their
// original ids (the server stores a resent id once), and recovers missed events from history,
// so that Events delivers every conversation's events exactly once and in seq order.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/parley-chat/parley/protocol"
)

// apiPrefix is where every endpoint of the wire contract lives.
const apiPrefix = "/api/v1"

// refreshTimeout bounds a token refresh (see runRefresh for why no caller's context does).
const refreshTimeout = 30 * time.Second

// maxErrorBody bounds how much of an error response is read to decode it.
const maxErrorBody = 64 << 10

// ErrNoRefreshToken is returned by Refresh when the Client holds no refresh token.
var ErrNoRefreshToken = errors.New("client: no refresh token")

// Client talks to one Parley server's HTTP API on behalf of one device. It is safe for
// concurrent use; its tokens may be replaced at any time (Login, Refresh, SetTokens).
type Client struct {
	api     string // base URL with /api/v1, no trailing slash
	wsURL   string // ws(s)://…/api/v1/ws
	hc      *http.Client
	log     *slog.Logger
	onToken func(protocol.Tokens)

	mu     sync.Mutex
	tokens protocol.Tokens
	flight *refreshFlight // the refresh in progress, if any
	// refused remembers the server's refusal of a refresh token, so that every later 401
	// does not ask again with the same dead token. It applies while refusedRT is held.
	refused   error
	refusedRT string
}

// refreshFlight is one refresh shared by every caller that hit a 401 at the same time.
type refreshFlight struct {
	done chan struct{} // closed when err is set
	err  error
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient makes the Client use hc for REST calls. If hc's transport is an
// *http.Transport with a TLSClientConfig, WebSocket dials use that TLS config too.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) {
		if hc != nil {
			c.hc = hc
		}
	}
}

// WithLogger sets the logger for reconnects and recoveries (default: discard).
func WithLogger(l *slog.Logger) Option {
	return func(c *Client) {
		if l != nil {
			c.log = l
		}
	}
}

// WithTokenHook calls fn with the new tokens after every Login and every refresh (automatic
// or not), outside any lock. A client that stores tokens (the CLI) needs it: a refresh rotates
// the refresh token, and the old one stops working.
func WithTokenHook(fn func(protocol.Tokens)) Option {
	return func(c *Client) { c.onToken = fn }
}

// New returns a Client for the server at baseURL, e.g. "http://127.0.0.1:8080" (a path prefix
// is kept: "https://host/chat" talks to https://host/chat/api/v1). It does no I/O.
func New(baseURL string, opts ...Option) *Client {
	base := strings.TrimRight(baseURL, "/")
	c := &Client{
		api: base + apiPrefix,
		hc:  http.DefaultClient,
		log: slog.New(slog.DiscardHandler),
	}
	switch {
	case strings.HasPrefix(base, "https://"):
		c.wsURL = "wss://" + strings.TrimPrefix(base, "https://") + apiPrefix + "/ws"
	case strings.HasPrefix(base, "http://"):
		c.wsURL = "ws://" + strings.TrimPrefix(base, "http://") + apiPrefix + "/ws"
	default: // already ws:// or wss://, or something Dial will reject with a clear error
		c.wsURL = base + apiPrefix + "/ws"
	}
	for _, o := range opts {
		o(c)
	}
	return c
}

// Tokens returns the tokens the Client currently holds.
func (c *Client) Tokens() protocol.Tokens {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tokens
}

// SetTokens replaces the held tokens, e.g. with ones saved by an earlier run.
func (c *Client) SetTokens(t protocol.Tokens) {
	c.mu.Lock()
	c.tokens = t
	c.mu.Unlock()
}

func (c *Client) accessToken() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tokens.AccessToken
}

// tlsConfig returns the TLS config of the HTTP transport, for WebSocket dials.
func (c *Client) tlsConfig() *tls.Config {
	if t, ok := c.hc.Transport.(*http.Transport); ok {
		return t.TLSClientConfig
	}
	return nil
}

// APIError is an error answered by the server: an HTTP error response, or a WebSocket error
// frame (Status 0). Code is the stable snake_case code programs should test
// (protocol.Code*); Message is for people.
type APIError struct {
	// Op says what failed: "GET /api/v1/me", "ws send <id>", "ws dial".
	Op     string
	Status int // HTTP status; 0 for a WebSocket error frame
	Code   string
	// Message is the server's human-readable text.
	Message string
	// RetryAfter is the server's Retry-After (429, 503), zero if none was given.
	RetryAfter time.Duration
}

func (e *APIError) Error() string {
	var b strings.Builder
	if e.Op != "" {
		b.WriteString(e.Op)
		b.WriteString(": ")
	}
	if e.Status != 0 {
		b.WriteString(strconv.Itoa(e.Status))
		b.WriteByte(' ')
	}
	b.WriteString(e.Code)
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	if e.RetryAfter > 0 {
		b.WriteString(" (retry after ")
		b.WriteString(e.RetryAfter.String())
		b.WriteByte(')')
	}
	return b.String()
}

// ErrorCode returns the Code of the *APIError in err's chain, or "" if there is none.
func ErrorCode(err error) string {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Code
	}
	return ""
}

// errorStatus returns the HTTP status of the *APIError in err's chain, or 0.
func errorStatus(err error) int {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Status
	}
	return 0
}

// codeForStatus is the code used when an error response carries no JSON error body (a proxy
// answered, say), so that Code is never empty.
func codeForStatus(status int) string {
	switch status {
	case http.StatusBadRequest:
		return protocol.CodeBadRequest
	case http.StatusUnauthorized:
		return protocol.CodeUnauthorized
	case http.StatusForbidden:
		return protocol.CodeForbidden
	case http.StatusNotFound:
		return protocol.CodeNotFound
	case http.StatusConflict:
		return protocol.CodeConflict
	case http.StatusRequestEntityTooLarge:
		return protocol.CodeTooLarge
	case http.StatusTooManyRequests:
		return protocol.CodeRateLimited
	case http.StatusServiceUnavailable:
		return protocol.CodeUnavailable
	}
	if status >= 500 {
		return protocol.CodeInternal
	}
	return protocol.CodeBadRequest
}

// parseRetryAfter reads a Retry-After value: delay-seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s < 0 {
			return 0
		}
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// decodeAPIError builds the *APIError for a non-2xx response.
func decodeAPIError(op string, status int, h http.Header, body io.Reader) *APIError {
	e := &APIError{Op: op, Status: status, RetryAfter: parseRetryAfter(h.Get("Retry-After"), time.Now())}
	raw, _ := io.ReadAll(io.LimitReader(body, maxErrorBody))
	var eb protocol.ErrorBody
	if json.Unmarshal(raw, &eb) == nil && eb.Error.Code != "" {
		e.Code, e.Message = eb.Error.Code, eb.Error.Message
		return e
	}
	e.Code = codeForStatus(status)
	e.Message = strings.TrimSpace(string(raw))
	if len(e.Message) > 200 {
		e.Message = e.Message[:200] + "…"
	}
	if e.Message == "" {
		e.Message = http.StatusText(status)
	}
	return e
}

// do sends one request to the API and decodes a 2xx answer into out (if non-nil). With auth
// it sends the access token and, on a 401 while a refresh token is held, refreshes once and
// retries. in is encoded once, so the retry resends the same bytes. It returns the HTTP
// status of the final answer (0 if there was none).
func (c *Client) do(ctx context.Context, method, path string, q url.Values, in, out any, auth bool) (int, error) {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return 0, fmt.Errorf("%s %s: encode request: %w", method, path, err)
		}
	}
	for attempt := 0; ; attempt++ {
		token := ""
		if auth {
			token = c.accessToken()
		}
		status, err := c.roundTrip(ctx, method, path, q, body, token, out)
		if !auth || attempt > 0 || status != http.StatusUnauthorized || !c.canRefresh() {
			return status, err
		}
		if rerr := c.refreshAfter(ctx, token); rerr != nil {
			return status, fmt.Errorf("%s %s: refresh after 401: %w", method, path, rerr)
		}
	}
}

// roundTrip is one HTTP exchange of do, without any retry.
func (c *Client) roundTrip(ctx context.Context, method, path string, q url.Values, body []byte, token string, out any) (int, error) {
	u := c.api + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", method, path, err)
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, decodeAPIError(method+" "+apiPrefix+path, resp.StatusCode, resp.Header, resp.Body)
	}
	if out != nil && resp.StatusCode != http.StatusNoContent {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: decode %d answer: %w", method, path, resp.StatusCode, err)
		}
	}
	// Drain what is left (a trailing newline) so the connection can be reused.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	return resp.StatusCode, nil
}

func (c *Client) canRefresh() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tokens.RefreshToken != ""
}

// refreshAfter makes sure the access token is newer than used, the one that was just
// rejected: if another caller already replaced it, it returns at once; if a refresh is in
// flight, it waits for that one; otherwise it starts one and waits for it. This is what
// makes concurrent 401s cost one refresh.
func (c *Client) refreshAfter(ctx context.Context, used string) error {
	for {
		c.mu.Lock()
		if c.tokens.AccessToken != used {
			c.mu.Unlock()
			return nil
		}
		f := c.flight
		if f == nil {
			rt := c.tokens.RefreshToken
			if rt == "" {
				c.mu.Unlock()
				return ErrNoRefreshToken
			}
			if rt == c.refusedRT {
				err := c.refused
				c.mu.Unlock()
				return err
			}
			f = &refreshFlight{done: make(chan struct{})}
			c.flight = f
			go c.runRefresh(f, rt)
		}
		c.mu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		if f.err != nil && isContextErr(f.err) && ctx.Err() == nil {
			continue // the exchange timed out; try again
		}
		return f.err
	}
}

// runRefresh is the goroutine of one refresh flight; it always ends within refreshTimeout.
// It does not use any caller's context: the server rotates the refresh token as soon as it
// handles the request, so abandoning the answer would lose the device's only valid refresh
// token. Callers waiting for it may leave early; the flight completes without them.
func (c *Client) runRefresh(f *refreshFlight, refreshToken string) {
	t, err := c.postRefresh(refreshToken)
	c.mu.Lock()
	if err == nil {
		c.tokens = mergeTokens(c.tokens, t)
		t = c.tokens
	} else if st := errorStatus(err); st >= 400 && st < 500 && st != http.StatusTooManyRequests {
		c.refused, c.refusedRT = err, refreshToken
	}
	c.flight = nil
	f.err = err
	close(f.done)
	c.mu.Unlock()
	if err == nil && c.onToken != nil {
		c.onToken(t)
	}
}

func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// postRefresh exchanges refreshToken for a new pair.
func (c *Client) postRefresh(refreshToken string) (protocol.Tokens, error) {
	ctx, cancel := context.WithTimeout(context.Background(), refreshTimeout)
	defer cancel()
	var t protocol.Tokens
	_, err := c.do(ctx, http.MethodPost, "/auth/refresh", nil, protocol.RefreshRequest{RefreshToken: refreshToken}, &t, false)
	if err != nil {
		return t, err
	}
	if t.AccessToken == "" {
		return t, errors.New("POST /auth/refresh: answer has no access_token")
	}
	return t, nil
}

// mergeTokens applies a refresh answer to the held tokens: fields the answer leaves empty
// (user and device ids, possibly the refresh token) keep their old values.
func mergeTokens(old, t protocol.Tokens) protocol.Tokens {
	if t.RefreshToken == "" {
		t.RefreshToken = old.RefreshToken
	}
	if t.UserID == "" {
		t.UserID = old.UserID
	}
	if t.DeviceID == "" {
		t.DeviceID = old.DeviceID
	}
	return t
}

// Refresh exchanges the refresh token for a new pair now and stores it. If a refresh is
// already in flight it joins that one instead of starting a second. If ctx ends first,
// Refresh returns but the exchange still completes and its tokens are stored.
func (c *Client) Refresh(ctx context.Context) error {
	return c.refreshAfter(ctx, c.accessToken())
}

// Signup creates an account. It does not log in.
func (c *Client) Signup(ctx context.Context, username, password, displayName string) (protocol.User, error) {
	var out protocol.UserBody
	_, err := c.do(ctx, http.MethodPost, "/auth/signup", nil,
		protocol.SignupRequest{Username: username, Password: password, DisplayName: displayName}, &out, false)
	return out.User, err
}

// Login creates a new device for the user and stores its tokens in the Client.
func (c *Client) Login(ctx context.Context, username, password, deviceName string) (protocol.Tokens, error) {
	var t protocol.Tokens
	_, err := c.do(ctx, http.MethodPost, "/auth/login", nil,
		protocol.LoginRequest{Username: username, Password: password, DeviceName: deviceName}, &t, false)
	if err != nil {
		return t, err
	}
	c.SetTokens(t)
	if c.onToken != nil {
		c.onToken(t)
	}
	return t, nil
}

// Logout revokes this device's tokens on the server and forgets them locally.
func (c *Client) Logout(ctx context.Context) error {
	if _, err := c.do(ctx, http.MethodPost, "/auth/logout", nil, nil, nil, true); err != nil {
		return err
	}
	c.SetTokens(protocol.Tokens{})
	return nil
}
