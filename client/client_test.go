package client

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parley-chat/parley/protocol"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestAPIErrorDecoding(t *testing.T) {
	retryAt := time.Now().Add(10 * time.Second).UTC().Format(http.TimeFormat)
	cases := []struct {
		name        string
		status      int
		header      map[string]string
		body        string
		wantCode    string
		wantMessage string
		wantRetry   [2]time.Duration // inclusive range
	}{
		{
			name:        "json error body",
			status:      409,
			body:        `{"error":{"code":"conflict","message":"username taken"}}`,
			wantCode:    protocol.CodeConflict,
			wantMessage: "username taken",
		},
		{
			name:        "rate limited with seconds",
			status:      429,
			header:      map[string]string{"Retry-After": "3"},
			body:        `{"error":{"code":"rate_limited","message":"slow down"}}`,
			wantCode:    protocol.CodeRateLimited,
			wantMessage: "slow down",
			wantRetry:   [2]time.Duration{3 * time.Second, 3 * time.Second},
		},
		{
			name:        "unavailable with http date",
			status:      503,
			header:      map[string]string{"Retry-After": retryAt},
			body:        `{"error":{"code":"unavailable","message":"draining"}}`,
			wantCode:    protocol.CodeUnavailable,
			wantMessage: "draining",
			wantRetry:   [2]time.Duration{8 * time.Second, 11 * time.Second},
		},
		{
			name:        "proxy text body",
			status:      502,
			body:        "bad gateway\n",
			wantCode:    protocol.CodeInternal,
			wantMessage: "bad gateway",
		},
		{
			name:        "empty body",
			status:      404,
			wantCode:    protocol.CodeNotFound,
			wantMessage: "Not Found",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				for k, v := range tc.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tc.status)
				_, _ = io.WriteString(w, tc.body)
			}))
			defer srv.Close()
			cl := New(srv.URL)
			cl.SetTokens(protocol.Tokens{AccessToken: "a"})
			_, err := cl.User(testCtx(t), "u1")
			var ae *APIError
			if !errors.As(err, &ae) {
				t.Fatalf(
					"User error = %v, want *APIError",
					err)
			}
			if ae.Status != tc.status || ae.Code != tc.wantCode || ae.Message != tc.wantMessage {
				t.Errorf(
					"got status %d code %q message %q, want %d %q %q",
					ae.Status, ae.Code, ae.Message, tc.status, tc.wantCode, tc.wantMessage)
			}
			if ae.RetryAfter < tc.wantRetry[0] || ae.RetryAfter > tc.wantRetry[1] {
				t.Errorf(
					"RetryAfter = %v, want in %v",
					ae.RetryAfter, tc.wantRetry)
			}
			if ErrorCode(err) != tc.wantCode {
				t.Errorf(
					"ErrorCode = %q, want %q",
					ErrorCode(err), tc.wantCode)
			}
			if ae.Op != "GET /api/v1/users/u1" {
				t.Errorf(
					"Op = %q",
					ae.Op)
			}
		})
	}
}

// TestEndpoints checks that every wrapper speaks the contract: method, path, query, body
// and authentication.
func TestEndpoints(t *testing.T) {
	type call func(ctx context.Context, c *Client) error
	cases := []struct {
		name      string
		call      call
		method    string
		path      string
		query     string
		body      string
		anonymous bool
	}{
		{
			name:      "signup",
			call:      func(ctx context.Context, c *Client) error { _, err := c.Signup(ctx, "al", "pw", "Al"); return err },
			method:    "POST",
			path:      "/api/v1/auth/signup",
			body:      `{"username":"al","password":"pw","display_name":"Al"}`,
			anonymous: true,
		},
		{
			name:      "login",
			call:      func(ctx context.Context, c *Client) error { _, err := c.Login(ctx, "al", "pw", "cli"); return err },
			method:    "POST",
			path:      "/api/v1/auth/login",
			body:      `{"username":"al","password":"pw","device_name":"cli"}`,
			anonymous: true,
		},
		{
			name:   "me",
			call:   func(ctx context.Context, c *Client) error { _, err := c.Me(ctx); return err },
			method: "GET",
			path:   "/api/v1/me",
		},
		{
			name:   "update me",
			call:   func(ctx context.Context, c *Client) error { _, err := c.UpdateMe(ctx, "Al"); return err },
			method: "PATCH",
			path:   "/api/v1/me",
			body:   `{"display_name":"Al"}`,
		},
		{
			name:   "user escapes id",
			call:   func(ctx context.Context, c *Client) error { _, err := c.User(ctx, "u 1/x"); return err },
			method: "GET",
			path:   "/api/v1/users/u%201%2Fx",
		},
		{
			name:   "search users",
			call:   func(ctx context.Context, c *Client) error { _, err := c.SearchUsers(ctx, "ab"); return err },
			method: "GET",
			path:   "/api/v1/users",
			query:  "prefix=ab",
		},
		{
			name:   "put contact",
			call:   func(ctx context.Context, c *Client) error { return c.PutContact(ctx, "u2") },
			method: "PUT",
			path:   "/api/v1/contacts/u2",
		},
		{
			name:   "delete contact",
			call:   func(ctx context.Context, c *Client) error { return c.DeleteContact(ctx, "u2") },
			method: "DELETE",
			path:   "/api/v1/contacts/u2",
		},
		{
			name:   "contacts",
			call:   func(ctx context.Context, c *Client) error { _, err := c.Contacts(ctx); return err },
			method: "GET",
			path:   "/api/v1/contacts",
		},
		{
			name:   "create direct",
			call:   func(ctx context.Context, c *Client) error { _, _, err := c.CreateDirect(ctx, "u2"); return err },
			method: "POST",
			path:   "/api/v1/conversations",
			body:   `{"type":"direct","member_ids":["u2"]}`,
		},
		{
			name: "create group",
			call: func(ctx context.Context, c *Client) error {
				_, err := c.CreateGroup(ctx, "g", []string{"u2", "u3"})
				return err
			},
			method: "POST",
			path:   "/api/v1/conversations",
			body:   `{"type":"group","name":"g","member_ids":["u2","u3"]}`,
		},
		{
			name:   "conversation",
			call:   func(ctx context.Context, c *Client) error { _, err := c.Conversation(ctx, "c1"); return err },
			method: "GET",
			path:   "/api/v1/conversations/c1",
		},
		{
			name:   "conversations page",
			call:   func(ctx context.Context, c *Client) error { _, err := c.Conversations(ctx, "cur", 10); return err },
			method: "GET",
			path:   "/api/v1/conversations",
			query:  "cursor=cur&limit=10",
		},
		{
			name:   "rename",
			call:   func(ctx context.Context, c *Client) error { return c.RenameConversation(ctx, "c1", "n") },
			method: "PATCH",
			path:   "/api/v1/conversations/c1",
			body:   `{"name":"n"}`,
		},
		{
			name:   "add members",
			call:   func(ctx context.Context, c *Client) error { return c.AddMembers(ctx, "c1", []string{"u3"}) },
			method: "POST",
			path:   "/api/v1/conversations/c1/members",
			body:   `{"user_ids":["u3"]}`,
		},
		{
			name:   "remove member",
			call:   func(ctx context.Context, c *Client) error { return c.RemoveMember(ctx, "c1", "u3") },
			method: "DELETE",
			path:   "/api/v1/conversations/c1/members/u3",
		},
		{
			name:   "messages",
			call:   func(ctx context.Context, c *Client) error { _, err := c.Messages(ctx, "c1", 10, 5, 20); return err },
			method: "GET",
			path:   "/api/v1/conversations/c1/messages",
			query:  "after=5&before=10&limit=20",
		},
		{
			name:   "messages newest page",
			call:   func(ctx context.Context, c *Client) error { _, err := c.Messages(ctx, "c1", 0, 0, 0); return err },
			method: "GET",
			path:   "/api/v1/conversations/c1/messages",
		},
		{
			name:   "sync all",
			call:   func(ctx context.Context, c *Client) error { _, err := c.Sync(ctx, ""); return err },
			method: "GET",
			path:   "/api/v1/sync",
		},
		{
			name:   "sync since",
			call:   func(ctx context.Context, c *Client) error { _, err := c.Sync(ctx, "42"); return err },
			method: "GET",
			path:   "/api/v1/sync",
			query:  "since=42",
		},
		{
			name:   "presence",
			call:   func(ctx context.Context, c *Client) error { _, err := c.Presence(ctx, []string{"a", "b"}); return err },
			method: "GET",
			path:   "/api/v1/presence",
			query:  "user_ids=a%2Cb",
		},
		{
			name:   "ws ticket",
			call:   func(ctx context.Context, c *Client) error { _, err := c.WSTicket(ctx); return err },
			method: "POST",
			path:   "/api/v1/ws/ticket",
		},
		{
			name:   "logout",
			call:   func(ctx context.Context, c *Client) error { return c.Logout(ctx) },
			method: "POST",
			path:   "/api/v1/auth/logout",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var (
				method, path, query, auth string
				body                      []byte
			)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				method, path, query = r.Method, r.URL.EscapedPath(), r.URL.RawQuery
				auth = r.Header.Get("Authorization")
				body, _ = io.ReadAll(r.Body)
				writeJSON(w, 200, map[string]any{})
			}))
			defer srv.Close()
			cl := New(srv.URL + "/")
			cl.SetTokens(protocol.Tokens{AccessToken: "tok"})
			if err := tc.call(testCtx(t), cl); err != nil {
				t.Fatalf(
					"call: %v",
					err)
			}
			if method != tc.method || path != tc.path || query != tc.query {
				t.Errorf(
					"request = %s %s ?%s, want %s %s ?%s",
					method, path, query, tc.method, tc.path, tc.query)
			}
			if string(body) != tc.body {
				t.Errorf(
					"body = %s, want %s",
					body, tc.body)
			}
			wantAuth := "Bearer tok"
			if tc.anonymous {
				wantAuth = ""
			}
			if auth != wantAuth {
				t.Errorf(
					"Authorization = %q, want %q",
					auth, wantAuth)
			}
		})
	}
}

func TestCreateDirectCreated(t *testing.T) {
	cases := []struct {
		name        string
		status      int
		wantCreated bool
	}{
		{
			name:        "new pair",
			status:      http.StatusCreated,
			wantCreated: true,
		},
		{
			name:        "existing pair",
			status:      http.StatusOK,
			wantCreated: false,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				writeJSON(w, tc.status, protocol.ConversationBody{Conversation: protocol.Conversation{ID: "c1", Type: protocol.Direct}})
			}))
			defer srv.Close()
			cl := New(srv.URL)
			cl.SetTokens(protocol.Tokens{AccessToken: "tok"})
			conv, created, err := cl.CreateDirect(testCtx(t), "u2")
			if err != nil || conv.ID != "c1" || created != tc.wantCreated {
				t.Fatalf(
					"CreateDirect = %+v, %v, %v; want c1, %v, nil",
					conv, created, err, tc.wantCreated)
			}
		})
	}
}

// TestRefreshOn401 checks that a 401 refreshes once, however many calls hit it at the same
// time, and that an unrepairable 401 is returned as such.
func TestRefreshOn401(t *testing.T) {
	cases := []struct {
		name             string
		refreshToken     string
		callers          int
		wantStatus       int // 0: success
		wantRefreshCalls int32
	}{
		{
			name:             "one caller",
			refreshToken:     "r0",
			callers:          1,
			wantRefreshCalls: 1,
		},
		{
			name:             "concurrent callers share one refresh",
			refreshToken:     "r0",
			callers:          16,
			wantRefreshCalls: 1,
		},
		{
			name:             "refresh refused",
			refreshToken:     "revoked",
			callers:          4,
			wantStatus:       401,
			wantRefreshCalls: 1,
		},
		{
			name:             "no refresh token",
			callers:          2,
			wantStatus:       401,
			wantRefreshCalls: 0,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t)
			var hooks atomic.Int32
			cl := New(f.srv.URL, WithTokenHook(func(protocol.Tokens) { hooks.Add(1) }))
			cl.SetTokens(protocol.Tokens{AccessToken: "expired", RefreshToken: tc.refreshToken, UserID: "u1"})
			ctx := testCtx(t)
			errs := make([]error, tc.callers)
			var wg sync.WaitGroup
			for i := range tc.callers {
				wg.Go(func() {
					_, errs[i] = cl.Me(ctx)
				})
			}
			wg.Wait()
			for i, err := range errs {
				if got := errorStatus(err); got != tc.wantStatus || (tc.wantStatus == 0 && err != nil) {
					t.Errorf(
						"caller %d: err = %v, want status %d",
						i, err, tc.wantStatus)
				}
			}
			if got := f.refreshCalls.Load(); got != tc.wantRefreshCalls {
				t.Errorf(
					"refresh calls = %d, want %d",
					got, tc.wantRefreshCalls)
			}
			if tc.wantStatus == 0 {
				tok := cl.Tokens()
				if tok.RefreshToken != "r1" || tok.AccessToken != "a1" || tok.UserID != "u1" {
					t.Errorf(
						"tokens after refresh = %+v",
						tok)
				}
				if hooks.Load() != 1 {
					t.Errorf(
						"token hook called %d times, want 1",
						hooks.Load())
				}
			}
		})
	}
}

// TestRefreshRefusedIsRemembered: after the server refuses a refresh token, later 401s do
// not ask again with the same token; new tokens make refresh possible again.
func TestRefreshRefusedIsRemembered(t *testing.T) {
	f := newFake(t)
	cl := New(f.srv.URL)
	cl.SetTokens(protocol.Tokens{AccessToken: "expired", RefreshToken: "revoked"})
	ctx := testCtx(t)
	for range 3 {
		if _, err := cl.Me(ctx); errorStatus(err) != 401 {
			t.Fatalf(
				"Me = %v, want 401",
				err)
		}
	}
	if n := f.refreshCalls.Load(); n != 1 {
		t.Errorf(
			"refresh calls = %d, want 1",
			n)
	}
	cl.SetTokens(protocol.Tokens{AccessToken: "expired", RefreshToken: "r0"})
	if _, err := cl.Me(ctx); err != nil {
		t.Fatalf(
			"Me with a good refresh token: %v",
			err)
	}
}

// TestHungRefreshDoesNotHoldCallers: a caller waiting on a refresh leaves when its context
// ends; the refresh completes anyway and its tokens are kept.
func TestHungRefreshDoesNotHoldCallers(t *testing.T) {
	f := newFake(t)
	gate := make(chan struct{})
	f.set(func(f *fakeServer) { f.refreshGate = gate })
	cl := New(f.srv.URL)
	cl.SetTokens(protocol.Tokens{AccessToken: "expired", RefreshToken: "r0"})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := cl.Me(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf(
			"Me = %v, want deadline exceeded",
			err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf(
			"Me took %v despite its deadline",
			d)
	}
	close(gate)
	waitFor(t, "the refresh to land", func() bool { return cl.Tokens().RefreshToken == "r1" })
	if _, err := cl.Me(testCtx(t)); err != nil || f.refreshCalls.Load() != 1 {
		t.Errorf(
			"Me after refresh = %v, refresh calls %d",
			err, f.refreshCalls.Load())
	}
}

func TestRefreshWithoutToken(t *testing.T) {
	cl := New("http://127.0.0.1:1")
	if err := cl.Refresh(testCtx(t)); !errors.Is(err, ErrNoRefreshToken) {
		t.Fatalf(
			"Refresh = %v, want ErrNoRefreshToken",
			err)
	}
}

func TestLoginStoresAndLogoutClears(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/auth/login", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, protocol.Tokens{AccessToken: "a", RefreshToken: "r", UserID: "u1", DeviceID: "d1"})
	})
	mux.HandleFunc("POST /api/v1/auth/logout", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer a" {
			w.WriteHeader(401)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	cl := New(srv.URL)
	ctx := testCtx(t)
	tok, err := cl.Login(ctx, "al", "pw", "")
	if err != nil || cl.Tokens() != tok || tok.DeviceID != "d1" {
		t.Fatalf(
			"Login = %+v, %v; held %+v",
			tok, err, cl.Tokens())
	}
	if err := cl.Logout(ctx); err != nil {
		t.Fatalf(
			"Logout: %v",
			err)
	}
	if cl.Tokens() != (protocol.Tokens{}) {
		t.Errorf(
			"tokens after logout = %+v",
			cl.Tokens())
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	cases := []struct {
		in   string
		want time.Duration
	}{
		{
			in:   "",
			want: 0,
		},
		{
			in:   "120",
			want: 2 * time.Minute,
		},
		{
			in:   "-1",
			want: 0,
		},
		{
			in:   now.Add(5 * time.Second).Format(http.TimeFormat),
			want: 5 * time.Second,
		},
		{
			in:   now.Add(-5 * time.Second).Format(http.TimeFormat),
			want: 0,
		},
		{
			in:   "soon",
			want: 0,
		},
	}
	for _, tc := range cases {
		if got := parseRetryAfter(tc.in, now); got != tc.want {
			t.Errorf(
				"parseRetryAfter(%q) = %v, want %v",
				tc.in, got, tc.want)
		}
	}
}
