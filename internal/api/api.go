// Package api serves Parley's HTTP API (/api/v1): accounts and tokens, users and contacts,
// conversations, history and sync, as docs/protocol.md specifies. It reads from the store
// directly and leaves every write with rules attached (conversations, members) to chat.
package api

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/parley-chat/parley/internal/auth"
	"github.com/parley-chat/parley/internal/bus"
	"github.com/parley-chat/parley/internal/chat"
	"github.com/parley-chat/parley/internal/limit"
	"github.com/parley-chat/parley/internal/presence"
	"github.com/parley-chat/parley/internal/state"
	"github.com/parley-chat/parley/internal/store"
	"github.com/parley-chat/parley/protocol"
)

// Config holds the account settings. Zero fields take the defaults.
type Config struct {
	AccessTTL  time.Duration // lifetime of an access token (default 15m)
	RefreshTTL time.Duration // lifetime of a refresh token, renewed on every refresh (default 30 days)
	Password   auth.Params   // argon2id cost (default auth.DefaultParams)
	TicketTTL  time.Duration // lifetime of a WebSocket ticket (default 30s)
	// RefreshGrace is how long after a rotation the old refresh token is refused without
	// logging its device out, as a concurrent refresh or a retry presents it (default 30s).
	RefreshGrace time.Duration
	// MaxHashing bounds concurrent password hashes: each takes Password.Memory KiB, and a
	// burst of logins must not exhaust memory (default 4).
	MaxHashing int
}

func (c Config) withDefaults() Config {
	if c.AccessTTL <= 0 {
		c.AccessTTL = 15 * time.Minute
	}
	if c.RefreshTTL <= 0 {
		c.RefreshTTL = 30 * 24 * time.Hour
	}
	if c.Password.Memory == 0 {
		c.Password = auth.DefaultParams()
	}
	if c.TicketTTL <= 0 {
		c.TicketTTL = 30 * time.Second
	}
	if c.RefreshGrace <= 0 {
		c.RefreshGrace = 30 * time.Second
	}
	if c.MaxHashing <= 0 {
		c.MaxHashing = 4
	}
	return c
}

// API is the HTTP API. It also authenticates WebSocket handshakes for the gateway.
type API struct {
	cfg     Config
	st      store.Store
	chat    *chat.Service
	tokens  *auth.Tokens
	soft    state.State // tickets
	lim     *limit.Limiter
	bus     bus.Bus
	devices *activeDevices
	sub     bus.Subscription
	pres    *presence.Service
	log     *slog.Logger
	now     func() time.Time
	hashing chan struct{}
	// dummyHash is verified against when a login names no user, so that the answer takes as
	// long as for a wrong password and does not tell which usernames exist.
	dummyHash string
}

// New builds the API. key signs access tokens.
func New(cfg Config, st store.Store, c *chat.Service, pres *presence.Service, soft state.State, lim *limit.Limiter, b bus.Bus, key []byte, log *slog.Logger) (*API, error) {
	cfg = cfg.withDefaults()
	tokens, err := auth.NewTokens(key, cfg.AccessTTL, time.Now)
	if err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	dummy, err := auth.HashPassword(cfg.Password, "parley-dummy-password")
	if err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	a := &API{
		cfg: cfg, st: st, chat: c, tokens: tokens, soft: soft, lim: lim, bus: b, devices: newActiveDevices(5 * time.Second), pres: pres, log: log, now: time.Now,
		hashing: make(chan struct{}, cfg.MaxHashing), dummyHash: dummy,
	}
	if a.sub, err = a.devices.subscribe(b); err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	return a, nil
}

// Close stops listening for revoked devices.
func (a *API) Close() error { return a.sub.Unsubscribe() }

// route is one endpoint: its pattern, its handler, and whether it takes a bearer token.
type route struct {
	pattern string
	h       http.HandlerFunc
	public  bool
}

// routes is every endpoint of the API. Patterns reads it too, so that a test covering each
// route learns of a new one.
func (a *API) routes() []route {
	return []route{
		{"POST /api/v1/auth/signup", a.signup, true},
		{"POST /api/v1/auth/login", a.login, true},
		{"POST /api/v1/auth/refresh", a.refresh, true},
		{"POST /api/v1/auth/logout", a.logout, false},
		{"GET /api/v1/me", a.me, false},
		{"PATCH /api/v1/me", a.patchMe, false},
		{"GET /api/v1/users/{id}", a.user, false},
		{"GET /api/v1/users", a.searchUsers, false},
		{"PUT /api/v1/contacts/{user_id}", a.putContact, false},
		{"DELETE /api/v1/contacts/{user_id}", a.deleteContact, false},
		{"GET /api/v1/contacts", a.contacts, false},
		{"POST /api/v1/conversations", a.createConversation, false},
		{"GET /api/v1/conversations", a.conversations, false},
		{"GET /api/v1/conversations/{id}", a.conversation, false},
		{"PATCH /api/v1/conversations/{id}", a.patchConversation, false},
		{"POST /api/v1/conversations/{id}/members", a.addMembers, false},
		{"DELETE /api/v1/conversations/{id}/members/{user_id}", a.removeMember, false},
		{"GET /api/v1/conversations/{id}/messages", a.messages, false},
		{"GET /api/v1/sync", a.sync, false},
		{"POST /api/v1/ws/ticket", a.ticket, false},
		{"GET /api/v1/presence", a.presence, false},
	}
}

// Patterns lists the pattern of every route Routes registers.
func Patterns() []string {
	var a *API // method values of a nil *API are never called here
	var out []string
	for _, r := range a.routes() {
		out = append(out, r.pattern)
	}
	return out
}

// Routes registers the API's handlers on mux under /api/v1.
func (a *API) Routes(mux *http.ServeMux) {
	for _, r := range a.routes() {
		h := a.checkQuery(r.h)
		if !r.public {
			h = a.authed(h)
		}
		mux.Handle(r.pattern, h)
	}
	mux.HandleFunc("/api/v1/", func(w http.ResponseWriter, r *http.Request) {
		if allow := allowedMethods(mux, r); len(allow) > 0 {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			a.writeError(w, r, chat.Errorf(protocol.CodeMethodNotAllowed, "%s is not allowed on %s; use %s", r.Method, r.URL.Path, strings.Join(allow, " or ")))
			return
		}
		a.writeError(w, r, chat.Errorf(protocol.CodeNotFound, "no such endpoint: %s %s", r.Method, r.URL.Path))
	})
}

// checkQuery refuses a query string that does not parse ("?cursor=%%%"), which Go would
// otherwise drop in silence, answering as if no parameter had been given.
func (a *API) checkQuery(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := url.ParseQuery(r.URL.RawQuery); err != nil {
			a.writeError(w, r, chat.Errorf(protocol.CodeBadRequest, "the query string is malformed: %s", chat.Clip(err.Error())))
			return
		}
		h.ServeHTTP(w, r)
	})
}

// allowedMethods lists the methods mux has a route for at r's path, other than this
// catch-all: a path that exists but not with r's method is a 405, not a 404.
func allowedMethods(mux *http.ServeMux, r *http.Request) []string {
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := mux.Handler(probe); pattern != "/api/v1/" && pattern != "" {
			allow = append(allow, m)
			if m == http.MethodGet {
				allow = append(allow, http.MethodHead) // a GET route answers HEAD too
			}
		}
	}
	return allow
}

// authenticate checks a bearer access token and that its device is still logged in.
func (a *API) authenticate(ctx context.Context, header string) (caller, error) {
	token, ok := strings.CutPrefix(header, "Bearer ")
	if !ok || token == "" {
		return caller{}, chat.Errorf(protocol.CodeUnauthorized, "missing bearer token in the Authorization header")
	}
	claims, err := a.tokens.ParseAccess(token)
	if err != nil {
		return caller{}, chat.Errorf(protocol.CodeUnauthorized, "invalid or expired access token; refresh it")
	}
	return a.checkDevice(ctx, claims.UserID, claims.DeviceID)
}

// checkDevice makes logout effective at once, not when the access token expires.
func (a *API) checkDevice(ctx context.Context, userID, deviceID string) (caller, error) {
	now := a.now()
	if a.devices.ok(deviceID, userID, now) {
		return caller{userID: userID, deviceID: deviceID}, nil
	}
	d, err := a.st.Device(ctx, deviceID)
	if errors.Is(err, store.ErrNotFound) || (err == nil && (d.RevokedTS != 0 || d.UserID != userID)) {
		return caller{}, chat.Errorf(protocol.CodeUnauthorized, "this device is logged out; log in again")
	}
	if err != nil {
		return caller{}, err
	}
	a.devices.put(deviceID, userID, now)
	return caller{userID: userID, deviceID: deviceID}, nil
}

func (a *API) authed(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := a.authenticate(r.Context(), r.Header.Get("Authorization"))
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="parley"`)
			a.writeError(w, r, err)
			return
		}
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), keyCaller, c)))
	})
}

// AuthenticateWS implements gateway.Authenticator: a bearer header, or a one-time ticket for
// browsers, which cannot set headers on a WebSocket.
func (a *API) AuthenticateWS(r *http.Request) (string, string, error) {
	if t := r.URL.Query().Get("ticket"); t != "" {
		v, ok, err := a.soft.TakeToken(r.Context(), ticketKey(t), a.now().UnixMilli())
		if err != nil {
			return "", "", fmt.Errorf("redeem ticket: %w", err) // internal: the gateway says 503
		}
		userID, deviceID, _ := strings.Cut(v, " ")
		if !ok || deviceID == "" {
			return "", "", chat.Errorf(protocol.CodeUnauthorized, "invalid, used or expired ticket")
		}
		c, err := a.checkDevice(r.Context(), userID, deviceID)
		if err != nil {
			return "", "", err
		}
		return c.userID, c.deviceID, nil
	}
	c, err := a.authenticate(r.Context(), r.Header.Get("Authorization"))
	if err != nil {
		return "", "", err
	}
	return c.userID, c.deviceID, nil
}

// hash runs f with a hashing slot held.
func (a *API) hash(ctx context.Context, f func()) error {
	select {
	case a.hashing <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-a.hashing }()
	f()
	return nil
}

func (a *API) signup(w http.ResponseWriter, r *http.Request) {
	var req protocol.SignupRequest
	if err := readAuthJSON(r, &req); err != nil {
		a.writeError(w, r, err)
		return
	}
	// Per address, before any hashing: accounts cost a password hash and a row each.
	if err := a.lim.Key(r.Context(), "signups from this address", a.lim.Config().SignupIP, a.lim.ClientIP(r)); err != nil {
		a.writeError(w, r, err)
		return
	}
	username := auth.NormalizeUsername(req.Username)
	if err := auth.ValidateUsername(username); err != nil {
		a.writeError(w, r, chat.Errorf(protocol.CodeBadRequest, "%v", err))
		return
	}
	if err := auth.ValidatePassword(req.Password); err != nil {
		a.writeError(w, r, chat.Errorf(protocol.CodeBadRequest, "%v", err))
		return
	}
	display, err := auth.CleanName("display_name", req.DisplayName, auth.DisplayNameMaxLen)
	if err != nil {
		a.writeError(w, r, chat.Errorf(protocol.CodeBadRequest, "%v", err))
		return
	}
	if display == "" {
		display = username
	}
	var hash string
	var herr error
	if err := a.hash(r.Context(), func() { hash, herr = auth.HashPassword(a.cfg.Password, req.Password) }); err != nil || herr != nil {
		a.writeError(w, r, errors.Join(err, herr))
		return
	}
	u := protocol.User{ID: newID(), Username: username, DisplayName: display, CreatedTS: a.now().UnixMilli()}
	if err := a.st.CreateUser(r.Context(), u, hash); err != nil {
		if errors.Is(err, store.ErrConflict) {
			err = chat.Errorf(protocol.CodeConflict, "username %q is taken", username)
		}
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, protocol.UserBody{User: u})
}

func (a *API) login(w http.ResponseWriter, r *http.Request) {
	var req protocol.LoginRequest
	if err := readAuthJSON(r, &req); err != nil {
		a.writeError(w, r, err)
		return
	}
	bad := chat.Errorf(protocol.CodeUnauthorized, "wrong username or password")
	username := auth.NormalizeUsername(req.Username)
	knownKey := a.knownAddressKey(r, username)
	known := a.knownAddress(r, knownKey)
	if err := a.loginAllowed(r, username, known); err != nil {
		a.writeError(w, r, err)
		return
	}
	if auth.ValidateUsername(username) != nil {
		a.writeError(w, r, bad) // no such account can exist: nothing to look up or hash
		return
	}
	u, hash, err := a.st.UserByUsername(r.Context(), username)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		a.writeError(w, r, err)
		return
	}
	found := err == nil
	if !found {
		hash = a.dummyHash
	}
	var ok bool
	var verr error
	if err := a.hash(r.Context(), func() { ok, verr = auth.VerifyPassword(hash, req.Password) }); err != nil {
		a.writeError(w, r, err)
		return
	}
	if verr != nil {
		a.writeError(w, r, fmt.Errorf("verify password of %s: %w", u.ID, verr))
		return
	}
	if !found || !ok {
		a.writeError(w, r, bad)
		return
	}
	name := strings.TrimSpace(req.DeviceName)
	if len(name) > 64 {
		name = name[:64]
	}
	refresh, refreshHash, err := auth.NewRefreshToken()
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	now := a.now()
	d := store.Device{
		ID: newID(), UserID: u.ID, Name: name, RefreshHash: refreshHash,
		RefreshExpiresTS: now.Add(a.cfg.RefreshTTL).UnixMilli(), CreatedTS: now.UnixMilli(),
	}
	if !known {
		err := a.soft.PutToken(r.Context(), knownKey, "1", a.now().UnixMilli(), knownAddressTTL)
		if err != nil && !errors.Is(err, state.ErrExists) {
			a.log.Warn("remember login address", "request_id", requestID(r.Context()), "err", err)
		}
	}
	if err := a.makeRoomForDevice(r, u.ID); err != nil {
		a.writeError(w, r, err)
		return
	}
	if err := a.st.CreateDevice(r.Context(), d); err != nil {
		a.writeError(w, r, err)
		return
	}
	a.issue(w, r, u.ID, d.ID, refresh)
}

// loginAllowed applies the login limits, narrowest first, so that an address over its own
// limit does not also draw on the account's: per client address (password spraying over many
// accounts), per account from that address, and per account from anywhere (a distributed
// guess). None locks an account: each bucket refills, and the account-wide one is large
// enough that one address alone cannot empty it. An address the account logged in from
// before (known) skips the account-wide bucket: a guess from many addresses that keeps it
// empty does not keep the owner out where the owner has been.
func (a *API) loginAllowed(r *http.Request, username string, known bool) error {
	cfg, ip, ctx := a.lim.Config(), a.lim.ClientIP(r), r.Context()
	if err := a.lim.Key(ctx, "login attempts from this address", cfg.LoginIP, ip); err != nil {
		return err
	}
	if err := a.lim.Key(ctx, "login attempts for this account from this address", cfg.LoginAccountIP, username+"\x00"+ip); err != nil {
		return err
	}
	if known {
		return nil
	}
	return a.lim.Key(ctx, "login attempts for this account", cfg.LoginAccount, username)
}

// knownAddressTTL is how long a successful login marks its address as the account's.
const knownAddressTTL = 30 * 24 * time.Hour

// knownAddressKey is where soft state marks that username logged in from r's address.
func (a *API) knownAddressKey(r *http.Request, username string) string {
	return "known:" + limit.HashKey(username+"\x00"+a.lim.ClientIP(r))
}

// knownAddress reports whether the mark under key (knownAddressKey) is there: the account
// logged in successfully from the address within knownAddressTTL (false if soft state
// cannot say).
func (a *API) knownAddress(r *http.Request, key string) bool {
	_, ok, err := a.soft.PeekToken(r.Context(), key, a.now().UnixMilli())
	return err == nil && ok
}

// makeRoomForDevice logs out the longest idle devices of userID (the ones refreshed longest
// ago) until a new one fits under MaxDevices: a script that logs in without ever logging
// out must not grow the user's devices without bound, and an error would lock its owner out.
func (a *API) makeRoomForDevice(r *http.Request, userID string) error {
	ds, err := a.st.DevicesOf(r.Context(), userID)
	if err != nil {
		return err
	}
	excess := len(ds) - a.lim.Config().MaxDevices + 1
	if excess <= 0 {
		return nil
	}
	slices.SortFunc(ds, func(x, y store.Device) int { return cmp.Compare(x.RefreshExpiresTS, y.RefreshExpiresTS) })
	for _, d := range ds[:excess] {
		if err := a.revokeDevice(r.Context(), userID, d.ID); err != nil {
			return err
		}
		a.log.Info("device limit: logged out the longest idle device", "user", userID, "device", d.ID,
			"request_id", requestID(r.Context()))
	}
	return nil
}

// allowUser takes a token from userID's bucket for rule; over the limit it answers the
// request (429 with Retry-After) and reports false.
func (a *API) allowUser(w http.ResponseWriter, r *http.Request, what string, rule limit.Rule, userID string) bool {
	if err := a.lim.User(r.Context(), what, rule, userID); err != nil {
		a.writeError(w, r, err)
		return false
	}
	return true
}

// revokeDevice logs a device out everywhere at once: its tokens stop working, every node
// forgets it as active, its sockets close.
func (a *API) revokeDevice(ctx context.Context, userID, deviceID string) error {
	if err := a.st.RevokeDevice(ctx, deviceID, a.now().UnixMilli()); err != nil {
		return err
	}
	a.devices.drop(deviceID)
	if err := a.bus.Publish(RevokedSubject, []byte(deviceID)); err != nil {
		a.log.Warn("announce revoked device", "request_id", requestID(ctx), "err", err)
	}
	if err := a.chat.DisconnectDevice(userID, deviceID); err != nil {
		// The device is logged out regardless: its next request or reconnect is refused.
		a.log.Warn("disconnect logged-out device", "request_id", requestID(ctx), "err", err)
	}
	a.pres.Gone(ctx, userID, deviceID)
	return nil
}

// issue answers with a fresh access token and the given refresh token.
func (a *API) issue(w http.ResponseWriter, r *http.Request, userID, deviceID, refresh string) {
	access, ttl, err := a.tokens.IssueAccess(userID, deviceID)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, protocol.Tokens{
		AccessToken: access, RefreshToken: refresh, ExpiresIn: int64(ttl / time.Second),
		UserID: userID, DeviceID: deviceID,
	})
}

func (a *API) refresh(w http.ResponseWriter, r *http.Request) {
	var req protocol.RefreshRequest
	if err := readAuthJSON(r, &req); err != nil {
		a.writeError(w, r, err)
		return
	}
	if err := a.lim.Key(r.Context(), "token refreshes from this address", a.lim.Config().RefreshIP, a.lim.ClientIP(r)); err != nil {
		a.writeError(w, r, err)
		return
	}
	invalid := chat.Errorf(protocol.CodeUnauthorized, "refresh token is invalid, used or expired; log in again")
	oldHash := auth.HashRefreshToken(req.RefreshToken)
	now := a.now().UnixMilli()
	d, err := a.st.DeviceByRefreshHash(r.Context(), oldHash)
	if errors.Is(err, store.ErrNotFound) {
		a.refreshReused(r, oldHash)
		a.writeError(w, r, invalid)
		return
	}
	if err == nil && d.RefreshExpiresTS < now {
		a.writeError(w, r, invalid)
		return
	}
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	refresh, newHash, err := auth.NewRefreshToken()
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	exp := a.now().Add(a.cfg.RefreshTTL).UnixMilli()
	if err := a.st.RotateRefresh(r.Context(), d.ID, oldHash, newHash, exp, now); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			err = invalid // a concurrent refresh with the same token won
		}
		a.writeError(w, r, err)
		return
	}
	a.issue(w, r, d.UserID, d.ID, refresh)
}

// refreshReused handles a refresh token that is not current: if the device rotated it out,
// two parties hold the device's tokens and one of them stole them (RFC 9700 §4.14). Which
// one cannot be told, so the whole device is logged out: the thief's newest token stops
// working, and so does the owner's, who logs in again.
//
// Except just after the rotation (Config.RefreshGrace): two tabs of one browser refreshing the same
// token at once, or a client retrying a refresh whose answer it lost, present the old token
// moments later. That is answered 401 (the client uses the newer token, or logs in) without
// logging the device out.
func (a *API) refreshReused(r *http.Request, hash string) {
	d, rotated, err := a.st.DeviceByRotatedRefresh(r.Context(), hash)
	if err != nil || d.RevokedTS != 0 {
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			a.log.Error("look up rotated refresh token", "request_id", requestID(r.Context()), "err", err)
		}
		return
	}
	if a.now().UnixMilli()-rotated < a.cfg.RefreshGrace.Milliseconds() {
		a.log.Info("rotated refresh token presented again just after its rotation: refused, device kept",
			"user", d.UserID, "device", d.ID, "request_id", requestID(r.Context()))
		return
	}
	a.log.Warn("rotated refresh token presented again: device logged out", "user", d.UserID, "device", d.ID,
		"client_ip", a.lim.ClientIP(r), "request_id", requestID(r.Context()))
	if err := a.revokeDevice(r.Context(), d.UserID, d.ID); err != nil {
		a.log.Error("log out device after refresh token reuse", "device", d.ID, "err", err)
	}
}

func (a *API) logout(w http.ResponseWriter, r *http.Request) {
	c := callerOf(r)
	if err := a.revokeDevice(r.Context(), c.userID, c.deviceID); err != nil {
		a.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) me(w http.ResponseWriter, r *http.Request) {
	u, err := a.st.UserByID(r.Context(), callerOf(r).userID)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, protocol.UserBody{User: u})
}

func (a *API) patchMe(w http.ResponseWriter, r *http.Request) {
	var req protocol.PatchMeRequest
	if err := readJSON(r, &req); err != nil {
		a.writeError(w, r, err)
		return
	}
	id := callerOf(r).userID
	if req.DisplayName == nil {
		a.me(w, r)
		return
	}
	name, err := auth.CleanName("display_name", *req.DisplayName, auth.DisplayNameMaxLen)
	if err == nil && name == "" {
		err = fmt.Errorf("display_name must be 1 to %d characters", auth.DisplayNameMaxLen)
	}
	if err != nil {
		a.writeError(w, r, chat.Errorf(protocol.CodeBadRequest, "%v", err))
		return
	}
	u, err := a.st.SetDisplayName(r.Context(), id, name)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, protocol.UserBody{User: u})
}

func (a *API) user(w http.ResponseWriter, r *http.Request) {
	u, err := a.st.UserByID(r.Context(), r.PathValue("id"))
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			err = chat.Errorf(protocol.CodeNotFound, "user %s does not exist", r.PathValue("id"))
		}
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, protocol.UserBody{User: u})
}

func (a *API) searchUsers(w http.ResponseWriter, r *http.Request) {
	limit, err := pageLimit(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	prefix := auth.NormalizeUsername(r.URL.Query().Get("prefix"))
	users, err := a.st.SearchUsers(r.Context(), prefix, limit)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, protocol.UsersBody{Users: nonNil(users)})
}

func (a *API) putContact(w http.ResponseWriter, r *http.Request) {
	c, other := callerOf(r), r.PathValue("user_id")
	if other == c.userID {
		a.writeError(w, r, chat.Errorf(protocol.CodeBadRequest, "you cannot add yourself as a contact"))
		return
	}
	have, err := a.st.ContactsOf(r.Context(), c.userID)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if max := a.lim.Config().MaxContacts; len(have) >= max && !slices.ContainsFunc(have, func(u protocol.User) bool { return u.ID == other }) {
		a.writeError(w, r, chat.Errorf(protocol.CodeConflict, "the contact list is full (%d contacts); remove one first", max))
		return
	}
	if err := a.st.PutContact(r.Context(), c.userID, other, a.now().UnixMilli()); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			err = chat.Errorf(protocol.CodeNotFound, "user %s does not exist", other)
		}
		a.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) deleteContact(w http.ResponseWriter, r *http.Request) {
	if err := a.st.DeleteContact(r.Context(), callerOf(r).userID, r.PathValue("user_id")); err != nil {
		a.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) contacts(w http.ResponseWriter, r *http.Request) {
	users, err := a.st.ContactsOf(r.Context(), callerOf(r).userID)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, protocol.UsersBody{Users: nonNil(users)})
}

func (a *API) createConversation(w http.ResponseWriter, r *http.Request) {
	var req protocol.CreateConversationRequest
	if err := readJSON(r, &req); err != nil {
		a.writeError(w, r, err)
		return
	}
	me := callerOf(r).userID
	switch req.Type {
	case protocol.Direct:
		if len(req.MemberIDs) != 1 {
			a.writeError(w, r, chat.Errorf(protocol.CodeBadRequest, "a direct conversation takes exactly one other member in member_ids"))
			return
		}
		if !a.allowUser(w, r, "conversation changes", a.lim.Config().Membership, me) {
			return
		}
		c, created, err := a.chat.CreateDirect(r.Context(), me, req.MemberIDs[0])
		if err != nil {
			a.writeError(w, r, err)
			return
		}
		status := http.StatusOK
		if created {
			status = http.StatusCreated
		}
		writeJSON(w, status, protocol.ConversationBody{Conversation: c})
	case protocol.Group:
		if !a.allowUser(w, r, "groups created", a.lim.Config().GroupCreate, me) {
			return
		}
		c, err := a.chat.CreateGroup(r.Context(), me, req.Name, req.MemberIDs)
		if err != nil {
			a.writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusCreated, protocol.ConversationBody{Conversation: c})
	default:
		a.writeError(w, r, chat.Errorf(protocol.CodeBadRequest, `type must be "direct" or "group", got %q`, req.Type))
	}
}

func (a *API) conversations(w http.ResponseWriter, r *http.Request) {
	limit, err := pageLimit(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	cs, next, err := a.st.ConversationsOf(r.Context(), callerOf(r).userID, r.URL.Query().Get("cursor"), limit)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrBadCursor) {
			err = chat.Errorf(protocol.CodeBadRequest, "cursor is not one this server gave out")
		}
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, protocol.ConversationsBody{Conversations: nonNil(cs), HasMore: next != "", NextCursor: next})
}

func (a *API) conversation(w http.ResponseWriter, r *http.Request) {
	c, err := a.st.Conversation(r.Context(), r.PathValue("id"), callerOf(r).userID)
	if err != nil {
		a.writeError(w, r, notFoundConversation(err, r.PathValue("id")))
		return
	}
	writeJSON(w, http.StatusOK, protocol.ConversationBody{Conversation: c})
}

// notFoundConversation words a store miss for a client; non-members get the same answer as
// for a conversation that does not exist, so membership does not leak.
func notFoundConversation(err error, id string) error {
	if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrNotMember) {
		return chat.Errorf(protocol.CodeNotFound, "conversation %s does not exist or you are not a member", id)
	}
	return err
}

func (a *API) patchConversation(w http.ResponseWriter, r *http.Request) {
	var req protocol.PatchConversationRequest
	if err := readJSON(r, &req); err != nil {
		a.writeError(w, r, err)
		return
	}
	id, me := r.PathValue("id"), callerOf(r).userID
	if req.Name != nil {
		if !a.allowUser(w, r, "conversation changes", a.lim.Config().Membership, me) {
			return
		}
		if _, err := a.chat.Rename(r.Context(), me, id, *req.Name); err != nil {
			a.writeError(w, r, notFoundConversation(err, id))
			return
		}
	}
	a.conversation(w, r)
}

func (a *API) addMembers(w http.ResponseWriter, r *http.Request) {
	var req protocol.AddMembersRequest
	if err := readJSON(r, &req); err != nil {
		a.writeError(w, r, err)
		return
	}
	id := r.PathValue("id")
	if !a.allowUser(w, r, "conversation changes", a.lim.Config().Membership, callerOf(r).userID) {
		return
	}
	if _, err := a.chat.AddMembers(r.Context(), callerOf(r).userID, id, req.UserIDs); err != nil {
		a.writeError(w, r, notFoundConversation(err, id))
		return
	}
	a.conversation(w, r)
}

func (a *API) removeMember(w http.ResponseWriter, r *http.Request) {
	id, me, target := r.PathValue("id"), callerOf(r).userID, r.PathValue("user_id")
	if !a.allowUser(w, r, "conversation changes", a.lim.Config().Membership, me) {
		return
	}
	if _, err := a.chat.RemoveMember(r.Context(), me, id, target); err != nil {
		a.writeError(w, r, notFoundConversation(err, id))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) messages(w http.ResponseWriter, r *http.Request) {
	before, err1 := queryInt(r, "before", 0)
	after, err2 := queryInt(r, "after", -1) // absent: the newest page
	limit, err3 := pageLimit(r)
	if err := cmp.Or(err1, err2, err3); err != nil {
		a.writeError(w, r, err)
		return
	}
	id := r.PathValue("id")
	ms, more, err := a.st.Messages(r.Context(), id, callerOf(r).userID, before, after, limit)
	if err != nil {
		a.writeError(w, r, notFoundConversation(err, id))
		return
	}
	writeJSON(w, http.StatusOK, protocol.MessagesBody{Messages: nonNil(ms), HasMore: more})
}

func (a *API) sync(w http.ResponseWriter, r *http.Request) {
	since := r.URL.Query().Get("since")
	limit, err := queryInt(r, "limit", 500)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if limit == 0 {
		limit = 500
	}
	userID := callerOf(r).userID
	cs, next, more, err := a.st.Sync(r.Context(), userID, since, int(min(limit, 1000)))
	if errors.Is(err, store.ErrBadCursor) {
		err = chat.Errorf(protocol.CodeBadRequest, "since must be a next_since token from an earlier sync, got %q", chat.Clip(since))
	}
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	var removed []string
	if since != "" { // a first sync has nothing stale to remove
		// After Sync: it then covers every departure up to next (see store.Departed).
		if removed, err = a.st.Departed(r.Context(), userID, since); err != nil {
			a.writeError(w, r, err)
			return
		}
	}
	writeJSON(w, http.StatusOK, protocol.SyncBody{Conversations: nonNil(cs), RemovedConversationIDs: removed,
		NextSince: next, HasMore: more})
}

func (a *API) ticket(w http.ResponseWriter, r *http.Request) {
	c := callerOf(r)
	t := auth.RandomToken()
	if err := a.soft.PutToken(r.Context(), ticketKey(t), c.userID+" "+c.deviceID, a.now().UnixMilli(), a.cfg.TicketTTL); err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, protocol.TicketBody{Ticket: t, ExpiresIn: int64(a.cfg.TicketTTL / time.Second)})
}

func (a *API) presence(w http.ResponseWriter, r *http.Request) {
	var ids []string
	for _, id := range strings.Split(r.URL.Query().Get("user_ids"), ",") {
		if id = strings.TrimSpace(id); id != "" {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 || len(ids) > 200 {
		a.writeError(w, r, chat.Errorf(protocol.CodeBadRequest, "user_ids must list 1 to 200 user ids, comma-separated"))
		return
	}
	ps, err := a.pres.Lookup(r.Context(), callerOf(r).userID, ids)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, protocol.PresenceBody{Presence: nonNil(ps)})
}

// ticketKey is where a ticket lives in soft state: under its hash, so that what the state
// holds cannot be used as a ticket.
func ticketKey(ticket string) string { return "ticket:" + auth.HashRefreshToken(ticket) }

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func newID() string { return uuid.Must(uuid.NewV7()).String() }
