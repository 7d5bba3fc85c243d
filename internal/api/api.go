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
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/parley-chat/parley/internal/auth"
	"github.com/parley-chat/parley/internal/bus"
	"github.com/parley-chat/parley/internal/chat"
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
	// LoginBurst login attempts per username are allowed at once, then LoginRate per
	// minute (defaults 10 and 6).
	LoginBurst int
	LoginRate  float64
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
	if c.LoginBurst <= 0 {
		c.LoginBurst = 10
	}
	if c.LoginRate <= 0 {
		c.LoginRate = 6
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
	soft    state.State // tickets and login rate limits
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
func New(cfg Config, st store.Store, c *chat.Service, pres *presence.Service, soft state.State, b bus.Bus, key []byte, log *slog.Logger) (*API, error) {
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
		cfg: cfg, st: st, chat: c, tokens: tokens, soft: soft, bus: b, devices: newActiveDevices(5 * time.Second), pres: pres, log: log, now: time.Now,
		hashing: make(chan struct{}, cfg.MaxHashing), dummyHash: dummy,
	}
	if a.sub, err = a.devices.subscribe(b); err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	return a, nil
}

// Close stops listening for revoked devices.
func (a *API) Close() error { return a.sub.Unsubscribe() }

// Routes registers the API's handlers on mux under /api/v1.
func (a *API) Routes(mux *http.ServeMux) {
	mux.HandleFunc("POST /api/v1/auth/signup", a.signup)
	mux.HandleFunc("POST /api/v1/auth/login", a.login)
	mux.HandleFunc("POST /api/v1/auth/refresh", a.refresh)
	mux.Handle("POST /api/v1/auth/logout", a.authed(a.logout))
	mux.Handle("GET /api/v1/me", a.authed(a.me))
	mux.Handle("PATCH /api/v1/me", a.authed(a.patchMe))
	mux.Handle("GET /api/v1/users/{id}", a.authed(a.user))
	mux.Handle("GET /api/v1/users", a.authed(a.searchUsers))
	mux.Handle("PUT /api/v1/contacts/{user_id}", a.authed(a.putContact))
	mux.Handle("DELETE /api/v1/contacts/{user_id}", a.authed(a.deleteContact))
	mux.Handle("GET /api/v1/contacts", a.authed(a.contacts))
	mux.Handle("POST /api/v1/conversations", a.authed(a.createConversation))
	mux.Handle("GET /api/v1/conversations", a.authed(a.conversations))
	mux.Handle("GET /api/v1/conversations/{id}", a.authed(a.conversation))
	mux.Handle("PATCH /api/v1/conversations/{id}", a.authed(a.patchConversation))
	mux.Handle("POST /api/v1/conversations/{id}/members", a.authed(a.addMembers))
	mux.Handle("DELETE /api/v1/conversations/{id}/members/{user_id}", a.authed(a.removeMember))
	mux.Handle("GET /api/v1/conversations/{id}/messages", a.authed(a.messages))
	mux.Handle("GET /api/v1/sync", a.authed(a.sync))
	mux.Handle("POST /api/v1/ws/ticket", a.authed(a.ticket))
	mux.Handle("GET /api/v1/presence", a.authed(a.presence))
	mux.HandleFunc("/api/v1/", func(w http.ResponseWriter, r *http.Request) {
		a.writeError(w, r, chat.Errorf(protocol.CodeNotFound, "no such endpoint: %s %s", r.Method, r.URL.Path))
	})
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

func (a *API) authed(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := a.authenticate(r.Context(), r.Header.Get("Authorization"))
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="parley"`)
			a.writeError(w, r, err)
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), keyCaller, c)))
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
	if err := readJSON(r, &req); err != nil {
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
	display := strings.TrimSpace(req.DisplayName)
	if display == "" {
		display = username
	}
	if err := auth.ValidateDisplayName(display); err != nil {
		a.writeError(w, r, chat.Errorf(protocol.CodeBadRequest, "%v", err))
		return
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
	if err := readJSON(r, &req); err != nil {
		a.writeError(w, r, err)
		return
	}
	bad := chat.Errorf(protocol.CodeUnauthorized, "wrong username or password")
	username := auth.NormalizeUsername(req.Username)
	// Password guessing is slowed per account, whichever addresses it comes from: a burst of
	// LoginBurst attempts, then LoginRate per minute.
	allowed, wait, err := a.soft.Allow(r.Context(), "login:"+username, a.cfg.LoginRate/60, a.cfg.LoginBurst, a.now().UnixMilli())
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if !allowed {
		w.Header().Set("Retry-After", strconv.Itoa(int(wait.Seconds())+1))
		a.writeError(w, r, chat.Errorf(protocol.CodeRateLimited, "too many login attempts for %q; try again in %d s", username, int(wait.Seconds())+1))
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
	if err := a.st.CreateDevice(r.Context(), d); err != nil {
		a.writeError(w, r, err)
		return
	}
	a.issue(w, r, u.ID, d.ID, refresh)
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
	if err := readJSON(r, &req); err != nil {
		a.writeError(w, r, err)
		return
	}
	invalid := chat.Errorf(protocol.CodeUnauthorized, "refresh token is invalid, used or expired; log in again")
	oldHash := auth.HashRefreshToken(req.RefreshToken)
	d, err := a.st.DeviceByRefreshHash(r.Context(), oldHash)
	if errors.Is(err, store.ErrNotFound) || (err == nil && d.RefreshExpiresTS < a.now().UnixMilli()) {
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
	if err := a.st.RotateRefresh(r.Context(), d.ID, oldHash, newHash, exp); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			err = invalid // a concurrent refresh with the same token won
		}
		a.writeError(w, r, err)
		return
	}
	a.issue(w, r, d.UserID, d.ID, refresh)
}

func (a *API) logout(w http.ResponseWriter, r *http.Request) {
	c := callerOf(r)
	if err := a.st.RevokeDevice(r.Context(), c.deviceID, a.now().UnixMilli()); err != nil {
		a.writeError(w, r, err)
		return
	}
	a.devices.drop(c.deviceID)
	if err := a.bus.Publish(RevokedSubject, []byte(c.deviceID)); err != nil {
		a.log.Warn("announce revoked device", "request_id", requestID(r.Context()), "err", err)
	}
	if err := a.chat.DisconnectDevice(c.userID, c.deviceID); err != nil {
		// The device is logged out regardless: its next request or reconnect is refused.
		a.log.Warn("disconnect logged-out device", "request_id", requestID(r.Context()), "err", err)
	}
	a.pres.Gone(r.Context(), c.userID, c.deviceID)
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
	name := strings.TrimSpace(*req.DisplayName)
	if err := auth.ValidateDisplayName(name); err != nil || name == "" {
		a.writeError(w, r, chat.Errorf(protocol.CodeBadRequest, "display_name must be 1 to 64 characters without control characters"))
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
		if errors.Is(err, store.ErrNotFound) {
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
	if _, err := a.chat.AddMembers(r.Context(), callerOf(r).userID, id, req.UserIDs); err != nil {
		a.writeError(w, r, notFoundConversation(err, id))
		return
	}
	a.conversation(w, r)
}

func (a *API) removeMember(w http.ResponseWriter, r *http.Request) {
	id, me, target := r.PathValue("id"), callerOf(r).userID, r.PathValue("user_id")
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
	var since int64
	if s := r.URL.Query().Get("since"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil || v < 0 {
			a.writeError(w, r, chat.Errorf(protocol.CodeBadRequest, "since must be a next_since token from an earlier sync, got %q", s))
			return
		}
		since = v
	}
	userID := callerOf(r).userID
	cs, next, err := a.st.Sync(r.Context(), userID, since)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	var removed []string
	if since > 0 { // a first sync has nothing stale to remove
		// After Sync: it then covers every departure up to next (see store.Departed).
		if removed, err = a.st.Departed(r.Context(), userID, since); err != nil {
			a.writeError(w, r, err)
			return
		}
	}
	writeJSON(w, http.StatusOK, protocol.SyncBody{Conversations: nonNil(cs), RemovedConversationIDs: removed,
		NextSince: strconv.FormatInt(next, 10)})
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
