// Package limit holds Parley's abuse limits: how much one user, one connection or one client
// address may do in a given time, and how many of a thing one user may hold. It is the one
// place their defaults are written down (docs/security.md lists them) and the one place keys
// for them are built, so that nothing a client sends becomes a key of a size it chose.
//
// The buckets themselves live in soft state (state.Limits): in memory on a single node, in
// Redis across nodes, so a user's limit is the same whichever node their connections are on.
package limit

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/parley-chat/parley/internal/state"
)

// Rule is a token bucket: Burst actions at once, then Rate per second on average.
type Rule struct {
	Rate  float64 // tokens per second
	Burst int
}

// PerMinute and PerHour write a rule the way people think of it.
func PerMinute(n float64, burst int) Rule { return Rule{Rate: n / 60, Burst: burst} }

// PerHour is PerMinute for rarer actions.
func PerHour(n float64, burst int) Rule { return Rule{Rate: n / 3600, Burst: burst} }

func (r Rule) or(def Rule) Rule {
	if r.Rate <= 0 || r.Burst <= 0 {
		return def
	}
	return r
}

// Config is every limit. Zero fields take the defaults (Defaults); the load generator raises
// them through `parley serve` flags, it never turns them off.
type Config struct {
	// Per user, over all of their devices and connections, on every node.
	Send    Rule // messages sent (default 20/s, burst 200: one account cannot store 1,000 in a second)
	Edit    Rule // edits and deletes (default 5/s, burst 50)
	React   Rule // reactions added or removed (default 10/s, burst 100)
	Receipt Rule // delivered and read receipts (default 100/s, burst 1,000: a client catching up acknowledges a lot at once)
	Typing  Rule // typing frames, before the relay's own throttle (default 5/s, burst 20)
	// GroupCreate bounds groups a user creates (default 30 per hour, burst 30).
	GroupCreate Rule
	// Membership bounds the other changes a user makes that notify other users: direct
	// conversations started, members added or removed, groups renamed (default 60/min,
	// burst 60).
	Membership Rule

	// Before authentication.
	LoginIP        Rule // login attempts per client address, any account (default 30/min, burst 30)
	LoginAccountIP Rule // login attempts per account from one address (default 6/min, burst 10)
	LoginAccount   Rule // login attempts per account from all addresses (default 30/min, burst 60)
	SignupIP       Rule // accounts created per client address (default 20 per hour, burst 30)
	RefreshIP      Rule // token refreshes per client address (default 60/min, burst 120)

	// Counts, not rates.
	ConnsPerUser int // WebSocket connections of one user on one node (default 50)
	ConnsPerIP   int // WebSocket connections from one client address on one node (default 1,000)
	MaxDevices   int // logged-in devices per user; a login past it logs out the longest idle one (default 50)
	MaxContacts  int // contacts per user (default 5,000)

	// TrustedProxies are the peers whose X-Forwarded-For is believed: the client address is
	// the last one in that header not itself in this list. Empty: the TCP peer, always.
	TrustedProxies []netip.Prefix
}

// Defaults returns the limits a plain `parley serve` runs with.
func Defaults() Config {
	return Config{
		Send:           Rule{Rate: 20, Burst: 200},
		Edit:           Rule{Rate: 5, Burst: 50},
		React:          Rule{Rate: 10, Burst: 100},
		Receipt:        Rule{Rate: 100, Burst: 1000},
		Typing:         Rule{Rate: 5, Burst: 20},
		GroupCreate:    PerHour(30, 30),
		Membership:     PerMinute(60, 60),
		LoginIP:        PerMinute(30, 30),
		LoginAccountIP: PerMinute(6, 10),
		LoginAccount:   PerMinute(30, 60),
		SignupIP:       PerHour(20, 30),
		RefreshIP:      PerMinute(60, 120),
		ConnsPerUser:   50,
		ConnsPerIP:     1000,
		MaxDevices:     50,
		MaxContacts:    5000,
	}
}

// WithDefaults fills every zero field from Defaults.
func (c Config) WithDefaults() Config {
	d := Defaults()
	c.Send = c.Send.or(d.Send)
	c.Edit = c.Edit.or(d.Edit)
	c.React = c.React.or(d.React)
	c.Receipt = c.Receipt.or(d.Receipt)
	c.Typing = c.Typing.or(d.Typing)
	c.GroupCreate = c.GroupCreate.or(d.GroupCreate)
	c.Membership = c.Membership.or(d.Membership)
	c.LoginIP = c.LoginIP.or(d.LoginIP)
	c.LoginAccountIP = c.LoginAccountIP.or(d.LoginAccountIP)
	c.LoginAccount = c.LoginAccount.or(d.LoginAccount)
	c.SignupIP = c.SignupIP.or(d.SignupIP)
	c.RefreshIP = c.RefreshIP.or(d.RefreshIP)
	for _, p := range []struct {
		v *int
		d int
	}{
		{&c.ConnsPerUser, d.ConnsPerUser}, {&c.ConnsPerIP, d.ConnsPerIP},
		{&c.MaxDevices, d.MaxDevices}, {&c.MaxContacts, d.MaxContacts},
	} {
		if *p.v <= 0 {
			*p.v = p.d
		}
	}
	return c
}

// Limiter takes tokens from the buckets of Config's rules. Safe for concurrent use.
type Limiter struct {
	cfg  Config
	soft state.Limits
	log  *slog.Logger
	now  func() time.Time
	// lastWarn rate-limits the warning logged when soft state fails (unix ms).
	lastWarn atomic.Int64
	// timeout bounds each call to soft state (0: none, for memory); skipUntil (unix ms) is
	// when per-user checks, which fail open, go back to soft state after a failure, so
	// that an unreachable Redis costs a frame one timeout at most every failPause, not
	// every frame.
	timeout   time.Duration
	skipUntil atomic.Int64
}

// failPause is how long per-user checks let everything through after soft state failed.
const failPause = 5 * time.Second

// New returns a Limiter over soft with cfg (zero fields take the defaults). timeout bounds
// each call to soft state: give one for a remote store (Redis), 0 for memory.
func New(cfg Config, soft state.Limits, timeout time.Duration, log *slog.Logger) *Limiter {
	return &Limiter{cfg: cfg.WithDefaults(), soft: soft, timeout: timeout, log: log, now: time.Now}
}

// Config returns the limits in force, defaults filled in. It is the Limiter's own, read on
// every frame (not copied): callers must not change it.
func (l *Limiter) Config() *Config { return &l.cfg }

// ErrUnavailable is a limit on strangers that could not be checked (soft state is down):
// the caller answers unavailable (503), and the client retries.
var ErrUnavailable = errors.New("rate limits cannot be checked now")

// Exceeded is the error of an action over its limit: the caller answers rate_limited with
// RetryAfter.
type Exceeded struct {
	What       string
	RetryAfter time.Duration
}

func (e *Exceeded) Error() string {
	return fmt.Sprintf("too many %s; try again in %s", e.What, e.RetryAfter.Round(time.Millisecond))
}

// User takes a token from user's bucket for rule (one of cfg's per-user rules, named by
// what). It answers nil or an *Exceeded. If soft state cannot be reached the action is
// allowed, and so is every per-user action for failPause after, and a warning logged (at
// most every 10 s): a Redis outage must not stop chat, and the limits exist to stop abuse,
// not to be a second point of failure.
func (l *Limiter) User(ctx context.Context, what string, rule Rule, userID string) error {
	return l.take(ctx, what, rule, what+":u:"+userID, false)
}

// Key takes a token for rule from the bucket of an arbitrary subject chosen by a client (a
// username, an address). The subject is hashed into the key, so its size is fixed whatever
// the client sent. Unlike User it fails closed: what it guards (passwords) matters more than
// the moment of availability lost while soft state is down.
func (l *Limiter) Key(ctx context.Context, what string, rule Rule, subject string) error {
	return l.take(ctx, what, rule, what+":"+HashKey(subject), true)
}

func (l *Limiter) take(ctx context.Context, what string, rule Rule, key string, failClosed bool) error {
	now := l.now().UnixMilli()
	if !failClosed && now < l.skipUntil.Load() {
		return nil
	}
	if l.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, l.timeout)
		defer cancel()
	}
	ok, wait, err := l.soft.Allow(ctx, key, rule.Rate, rule.Burst, now)
	if err != nil {
		if !failClosed {
			l.skipUntil.Store(now + failPause.Milliseconds())
		}
		if failClosed {
			if now := l.now().UnixMilli(); now-l.lastWarn.Load() > 10_000 {
				l.lastWarn.Store(now)
				l.log.Warn("rate limits unavailable: refusing", "limit", what, "err", err)
			}
			return fmt.Errorf("limit %s: %w: %w", what, ErrUnavailable, err)
		}
		if now := l.now().UnixMilli(); now-l.lastWarn.Load() > 10_000 {
			l.lastWarn.Store(now)
			l.log.Warn("rate limits unavailable: allowing for a while", "limit", what, "pause", failPause, "err", err)
		}
		return nil
	}
	if !ok {
		return &Exceeded{What: what, RetryAfter: max(wait, time.Millisecond)}
	}
	return nil
}

// HashKey maps a client-chosen string to a short fixed-size key (22 characters).
func HashKey(s string) string {
	sum := sha256.Sum256([]byte(s))
	return base64.RawURLEncoding.EncodeToString(sum[:16])
}

// ClientIP is the address a request came from: the TCP peer, or, when the peer is a trusted
// proxy, the rightmost address in X-Forwarded-For that is not itself a trusted proxy (the
// leftmost entries are whatever the client wrote, so they are never believed). IPv6 clients
// are keyed by their /64, since one host commonly holds a whole /64.
func (l *Limiter) ClientIP(r *http.Request) string {
	return ClientAddr(r, l.cfg.TrustedProxies)
}

// ClientAddr is ClientIP for a given list of trusted proxies.
func ClientAddr(r *http.Request, trusted []netip.Prefix) string {
	peer := parseAddr(r.RemoteAddr)
	if len(trusted) > 0 && peer.IsValid() && isTrusted(peer, trusted) {
		hops := r.Header.Values("X-Forwarded-For")
		var all []string
		for _, h := range hops {
			all = append(all, strings.Split(h, ",")...)
		}
		for i := len(all) - 1; i >= 0; i-- {
			a, err := netip.ParseAddr(strings.TrimSpace(all[i]))
			if err != nil {
				break // a garbled hop: stop believing, use the last good one
			}
			a = a.Unmap()
			peer = a
			if !isTrusted(a, trusted) {
				break
			}
		}
	}
	if !peer.IsValid() {
		return r.RemoteAddr
	}
	if peer.Is6() {
		p, _ := peer.Prefix(64)
		return p.String()
	}
	return peer.String()
}

func parseAddr(hostport string) netip.Addr {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap()
}

func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// ParsePrefixes reads a comma-separated list of addresses and CIDR prefixes
// ("10.0.0.0/8,127.0.0.1").
func ParsePrefixes(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if p, err := netip.ParsePrefix(f); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			return nil, fmt.Errorf("%q is neither an address nor a CIDR prefix", f)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// rules names each Rule of a Config for Set (the --limit flag) and for the docs.
func (c *Config) rules() map[string]*Rule {
	return map[string]*Rule{
		"send": &c.Send, "edit": &c.Edit, "react": &c.React, "receipt": &c.Receipt, "typing": &c.Typing,
		"group-create": &c.GroupCreate, "membership": &c.Membership, "login-ip": &c.LoginIP, "login-account-ip": &c.LoginAccountIP,
		"login-account": &c.LoginAccount, "signup-ip": &c.SignupIP, "refresh-ip": &c.RefreshIP,
	}
}

// Set sets one rule from "name=RATE/UNIT:BURST", UNIT one of s, m, h: "send=20/s:200",
// "signup-ip=20/h:30". It is the --limit flag of `parley serve`.
func (c *Config) Set(spec string) error {
	name, value, ok := strings.Cut(spec, "=")
	r := c.rules()[name]
	if !ok || r == nil {
		names := make([]string, 0, len(c.rules()))
		for n := range c.rules() {
			names = append(names, n)
		}
		slices.Sort(names)
		return fmt.Errorf("limit %q: want name=RATE/UNIT:BURST with name one of %s", spec, strings.Join(names, ", "))
	}
	rate, burst, ok := strings.Cut(value, ":")
	n, unit, ok2 := strings.Cut(rate, "/")
	per := map[string]float64{"s": 1, "m": 60, "h": 3600}[unit]
	v, err1 := strconv.ParseFloat(n, 64)
	b, err2 := strconv.Atoi(burst)
	if !ok || !ok2 || per == 0 || err1 != nil || err2 != nil || !(v > 0) || math.IsInf(v, 0) || b < 1 {
		return fmt.Errorf("limit %q: want name=RATE/UNIT:BURST, e.g. send=20/s:200 (UNIT s, m or h; RATE > 0, BURST >= 1)", spec)
	}
	*r = Rule{Rate: v / per, Burst: b}
	return nil
}

// Flag adapts Config.Set to flag.Value, for a repeated --limit.
type Flag struct{ C *Config }

func (f Flag) String() string { return "" }
func (f Flag) Set(s string) error {
	return f.C.Set(s)
}
