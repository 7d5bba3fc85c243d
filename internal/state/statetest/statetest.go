// Package statetest is the conformance suite for state.State implementations, in the manner
// of testing/fstest: each implementation's tests call Run with a constructor, and every
// sentence of the state package's contract is checked the same way against each of them.
//
// Where the contract leaves a reading open, the suite tests the one Parley's presence
// service relies on, and says so in the test's comment:
//   - A device whose expiry time equals now has expired ("online while its last heartbeat is
//     younger than the TTL": an age equal to the TTL is not younger).
//   - wentOffline is a transition, like cameOnline: it is true only for the call that ends
//     the user's presence, so that each departure is announced once, by Offline or by
//     Expire, never by both and never twice.
package statetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/parley-chat/parley/internal/state"
)

const (
	// callTimeout bounds every call into the State: generous for -race on a small machine
	// talking to a shared Redis.
	callTimeout = 20 * time.Second
	sec         = int64(1000) // one second in the contract's Unix milliseconds
)

// Run checks the state.State contract on states made by open. open must return a new, open
// State on every call (it may fail or skip t); Run closes each one, possibly twice,
// ignoring the second result. States may share a backing server with other runs: every
// test uses user ids and keys with a fresh random suffix, and only looks at its own users
// in what Expire returns. Times are passed in and start at the real clock, except where a
// test says otherwise.
func Run(t *testing.T, open func(t *testing.T) state.State) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s state.State)
	}{
		{"OnlineWhileTTLLive", testOnlineWhileTTLLive},
		{"CameOnlineOnFirstDeviceOnly", testCameOnlineFirstDevice},
		{"CameOnlineAfterTTLLapsedWithoutExpire", testCameOnlineAfterLapse},
		{"LastHeartbeatGoverns", testLastHeartbeatGoverns},
		{"OfflineOfOneDeviceKeepsUserOnline", testOfflineOneOfTwo},
		{"LastSeenIsLatestHeartbeatOrOffline", testLastSeenLatest},
		{"OfflineOfLapsedDevice", testOfflineLapsed},
		{"ExpireReturnsUsersLeftOfflineOnce", testExpire},
		{"ExpireConcurrentEachUserOnce", testExpireConcurrent},
		{"HeartbeatAfterExpireComesOnline", testHeartbeatAfterExpire},
		{"LookupOrderAndNeverSeen", testLookup},
		{"AllowBurstThenRetryAfter", testAllowBurst},
		{"AllowRefillsUpToBurst", testAllowRefill},
		{"AllowKeysIndependent", testAllowKeys},
		{"AllowConcurrentGrantsBurst", testAllowConcurrent},
		{"TokenTakeOnce", testTokenTakeOnce},
		{"TokenPutExisting", testTokenExists},
		{"TokenConcurrentTakeOneWinner", testTokenConcurrentTake},
		{"TokenExpires", testTokenExpires},
		{"TokenPeek", testTokenPeek},
		{"CloseThenErrClosed", testClose},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			if s == nil {
				t.Fatal("open returned a nil State")
			}
			t.Cleanup(func() { _ = s.Close() })
			tc.fn(t, s)
		})
	}
}

// ---- helpers ----

// id returns name with a random suffix no other test or run uses.
func id(name string) string {
	var r [8]byte
	_, _ = rand.Read(r[:])
	return name + "-" + hex.EncodeToString(r[:])
}

func ctx(t *testing.T) context.Context {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), callTimeout)
	t.Cleanup(cancel)
	return c
}

func nowMillis() int64 { return time.Now().UnixMilli() }

// heartbeat calls Heartbeat and checks cameOnline.
func heartbeat(t *testing.T, s state.State, user, dev string, now int64, ttl time.Duration, wantCame bool) {
	t.Helper()
	came, err := s.Heartbeat(ctx(t), user, dev, now, ttl)
	if err != nil {
		t.Fatalf("Heartbeat(%s, %s, %d, %v): %v", user, dev, now, ttl, err)
	}
	if came != wantCame {
		t.Errorf("Heartbeat(%s, %s, %d, %v): cameOnline = %v, want %v", user, dev, now, ttl, came, wantCame)
	}
}

// offline calls Offline and checks wentOffline.
func offline(t *testing.T, s state.State, user, dev string, now int64, wantWent bool) {
	t.Helper()
	went, err := s.Offline(ctx(t), user, dev, now)
	if err != nil {
		t.Fatalf("Offline(%s, %s, %d): %v", user, dev, now, err)
	}
	if went != wantWent {
		t.Errorf("Offline(%s, %s, %d): wentOffline = %v, want %v", user, dev, now, went, wantWent)
	}
}

// lookup checks one user's presence at now.
func lookup(t *testing.T, s state.State, user string, now int64, wantOnline bool, wantLastSeen int64) {
	t.Helper()
	got, err := s.Lookup(ctx(t), []string{user}, now)
	if err != nil {
		t.Fatalf("Lookup(%s, %d): %v", user, now, err)
	}
	want := state.UserPresence{UserID: user, Online: wantOnline, LastSeenTS: wantLastSeen}
	if len(got) != 1 || got[0] != want {
		t.Errorf("Lookup([%s], %d) = %+v, want [%+v]", user, now, got, want)
	}
}

// expire calls Expire and returns what it returned for users in mine (others may share the
// backing server), checking that none of them appears twice.
func expire(t *testing.T, s state.State, now int64, mine ...string) map[string]state.UserPresence {
	t.Helper()
	got, err := s.Expire(ctx(t), now)
	if err != nil {
		t.Fatalf("Expire(%d): %v", now, err)
	}
	out := map[string]state.UserPresence{}
	for _, p := range got {
		if !slices.Contains(mine, p.UserID) {
			continue
		}
		if _, dup := out[p.UserID]; dup {
			t.Errorf("Expire(%d) returned %s twice", now, p.UserID)
		}
		out[p.UserID] = p
	}
	return out
}

// wantExpired checks that got holds exactly the users in want, offline with those last-seen
// times.
func wantExpired(t *testing.T, now int64, got map[string]state.UserPresence, want map[string]int64) {
	t.Helper()
	for u, p := range got {
		ls, ok := want[u]
		if !ok {
			t.Errorf("Expire(%d) returned %+v, which it should not have", now, p)
			continue
		}
		if w := (state.UserPresence{UserID: u, LastSeenTS: ls}); p != w {
			t.Errorf("Expire(%d) returned %+v, want %+v", now, p, w)
		}
	}
	for u := range want {
		if _, ok := got[u]; !ok {
			t.Errorf("Expire(%d) did not return %s", now, u)
		}
	}
}

func allow(t *testing.T, s state.State, key string, rate float64, burst int, now int64) (bool, time.Duration) {
	t.Helper()
	ok, retry, err := s.Allow(ctx(t), key, rate, burst, now)
	if err != nil {
		t.Fatalf("Allow(%s, %v, %d, %d): %v", key, rate, burst, now, err)
	}
	if ok && retry != 0 {
		t.Errorf("Allow(%s, %v, %d, %d) = ok with retryAfter %v", key, rate, burst, now, retry)
	}
	return ok, retry
}

// drain takes n tokens from key at now, expecting all to succeed, then one more expecting
// a refusal, whose retryAfter it returns.
func drain(t *testing.T, s state.State, key string, rate float64, burst, n int, now int64) time.Duration {
	t.Helper()
	for i := range n {
		if ok, retry := allow(t, s, key, rate, burst, now); !ok {
			t.Fatalf("Allow #%d of %d on %s at %d refused (retryAfter %v), want allowed", i+1, n, key, now, retry)
		}
	}
	ok, retry := allow(t, s, key, rate, burst, now)
	if ok {
		t.Fatalf("Allow #%d on %s at %d allowed, want refused after %d", n+1, key, now, n)
	}
	return retry
}

func wantClosed(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, state.ErrClosed) {
		t.Errorf("%s after Close: err = %v, want state.ErrClosed", what, err)
	}
}

// ---- Presence ----

// testOnlineWhileTTLLive: "A device is online while its last heartbeat is younger than the
// TTL given with it", judged by Lookup's now alone, whether or not Expire has run. Last seen
// is the heartbeat's time throughout.
func testOnlineWhileTTLLive(t *testing.T, s state.State) {
	u, d := id("u"), id("d")
	t0 := nowMillis()
	heartbeat(t, s, u, d, t0, 10*time.Second, true)
	lookup(t, s, u, t0, true, t0)
	lookup(t, s, u, t0+10*sec-1, true, t0)
	lookup(t, s, u, t0+10*sec, false, t0)
	lookup(t, s, u, t0+3600*sec, false, t0)
}

// testCameOnlineFirstDevice: cameOnline only when the user had no live device: a repeated
// heartbeat and a second device announce nothing.
func testCameOnlineFirstDevice(t *testing.T, s state.State) {
	u, d1, d2 := id("u"), id("d1"), id("d2")
	t0 := nowMillis()
	heartbeat(t, s, u, d1, t0, 30*time.Second, true)
	heartbeat(t, s, u, d1, t0+sec, 30*time.Second, false)
	heartbeat(t, s, u, d2, t0+2*sec, 30*time.Second, false)
	lookup(t, s, u, t0+2*sec, true, t0+2*sec)

	other := id("other") // users are independent
	heartbeat(t, s, other, d1, t0+3*sec, 30*time.Second, true)
}

// testCameOnlineAfterLapse: "cameOnline reports whether the user was offline (no live
// device) before this call": a device whose TTL ran out counts as offline even if Expire
// has not collected it yet.
func testCameOnlineAfterLapse(t *testing.T, s state.State) {
	u, d1, d2 := id("u"), id("d1"), id("d2")
	t0 := nowMillis()
	heartbeat(t, s, u, d1, t0, 10*time.Second, true)
	heartbeat(t, s, u, d2, t0+10*sec, 10*time.Second, true) // d1's age equals its TTL: lapsed
	heartbeat(t, s, u, d1, t0+10*sec+1, 10*time.Second, false)
	heartbeat(t, s, u, d1, t0+60*sec, 10*time.Second, true) // both lapsed, same device back
}

// testLastHeartbeatGoverns: the device's last heartbeat and the TTL given with it decide,
// so a heartbeat extends the device's life, and a later heartbeat with a shorter TTL
// shortens it. Expire agrees with Lookup.
func testLastHeartbeatGoverns(t *testing.T, s state.State) {
	u, d := id("u"), id("d")
	t0 := nowMillis()
	heartbeat(t, s, u, d, t0, 10*time.Second, true)
	heartbeat(t, s, u, d, t0+5*sec, 10*time.Second, false)
	if got := expire(t, s, t0+12*sec, u); len(got) != 0 {
		t.Errorf("Expire at +12s returned %v; the heartbeat at +5s with TTL 10s keeps the device until +15s", got)
	}
	lookup(t, s, u, t0+15*sec-1, true, t0+5*sec)
	lookup(t, s, u, t0+15*sec, false, t0+5*sec)

	heartbeat(t, s, u, d, t0+20*sec, 60*time.Second, true)
	heartbeat(t, s, u, d, t0+21*sec, 5*time.Second, false)
	lookup(t, s, u, t0+26*sec-1, true, t0+21*sec)
	lookup(t, s, u, t0+26*sec, false, t0+21*sec)
	wantExpired(t, t0+30*sec, expire(t, s, t0+30*sec, u), map[string]int64{u: t0 + 21*sec})
}

// testOfflineOneOfTwo: Offline of one of two live devices leaves the user online;
// wentOffline when the last goes, and last seen is that time. Offline again announces
// nothing (transition reading), nor does Expire later: the departure was announced.
func testOfflineOneOfTwo(t *testing.T, s state.State) {
	u, d1, d2 := id("u"), id("d1"), id("d2")
	t0 := nowMillis()
	heartbeat(t, s, u, d1, t0, 30*time.Second, true)
	heartbeat(t, s, u, d2, t0, 30*time.Second, false)
	offline(t, s, u, d1, t0+sec, false)
	lookup(t, s, u, t0+sec, true, t0+sec)
	offline(t, s, u, d2, t0+2*sec, true)
	lookup(t, s, u, t0+2*sec, false, t0+2*sec)
	offline(t, s, u, d2, t0+3*sec, false)
	offline(t, s, u, id("never"), t0+3*sec, false)
	offline(t, s, id("nobody"), d1, t0+3*sec, false)
	if got := expire(t, s, t0+120*sec, u); len(got) != 0 {
		t.Errorf("Expire returned %v for a user whose devices all went offline explicitly", got)
	}
	lookup(t, s, u, t0+120*sec, false, t0+2*sec)

	heartbeat(t, s, u, d1, t0+200*sec, 30*time.Second, true) // and back
}

// testLastSeenLatest: "A user's last-seen time is the time of the last heartbeat of any
// device, or the time a device explicitly went offline, whichever is later", also when
// calls from different nodes arrive out of time order.
func testLastSeenLatest(t *testing.T, s state.State) {
	u, d1, d2 := id("u"), id("d1"), id("d2")
	t0 := nowMillis()
	heartbeat(t, s, u, d1, t0, 30*time.Second, true)
	heartbeat(t, s, u, d2, t0+100, 30*time.Second, false)
	offline(t, s, u, d1, t0+50, false) // reported late: earlier than d2's heartbeat
	lookup(t, s, u, t0+200, true, t0+100)
	heartbeat(t, s, u, d2, t0+90, 30*time.Second, false) // a late heartbeat does not move it back
	lookup(t, s, u, t0+200, true, t0+100)
	offline(t, s, u, d2, t0+300, true)
	lookup(t, s, u, t0+400, false, t0+300)
}

// testOfflineLapsed: Offline when a device's TTL ran out before Expire collected it. If the
// call leaves the user with no live device it reports wentOffline, whether the device it
// names had lapsed or another one had; either way Expire must not announce the same
// departure again. An Offline naming a device never recorded may leave the announcement to
// Offline or to Expire, but exactly one of them must make it.
func testOfflineLapsed(t *testing.T, s state.State) {
	u, d := id("u"), id("d")
	t0 := nowMillis()
	heartbeat(t, s, u, d, t0, 10*time.Second, true)
	offline(t, s, u, d, t0+20*sec, true)
	lookup(t, s, u, t0+20*sec, false, t0+20*sec)
	if got := expire(t, s, t0+30*sec, u); len(got) != 0 {
		t.Errorf("Expire returned %v after Offline already reported the user offline", got)
	}

	u2, d1, d2 := id("u2"), id("d1"), id("d2")
	heartbeat(t, s, u2, d1, t0, 10*time.Second, true)
	heartbeat(t, s, u2, d2, t0, 60*time.Second, false)
	offline(t, s, u2, d2, t0+20*sec, true) // d1 lapsed at +10s
	if got := expire(t, s, t0+30*sec, u2); len(got) != 0 {
		t.Errorf("Expire returned %v after Offline already reported the user offline", got)
	}

	u3 := id("u3")
	heartbeat(t, s, u3, d1, t0, 10*time.Second, true)
	went, err := s.Offline(ctx(t), u3, id("unknown"), t0+20*sec)
	if err != nil {
		t.Fatalf("Offline: %v", err)
	}
	announced := len(expire(t, s, t0+30*sec, u3))
	if went {
		announced++
	}
	if announced != 1 {
		t.Errorf("user whose only device lapsed, then Offline of a device never seen: departure reported %d times by Offline and Expire, want once", announced)
	}
}

// testExpire: "Expire removes every device whose TTL ran out before now and returns the
// users that this left with no live device (each once), with their last-seen time" — not
// users with a live device left, nor users already gone offline explicitly.
func testExpire(t *testing.T, s state.State) {
	a, b, c, e := id("a"), id("b"), id("c"), id("e")
	mine := []string{a, b, c, e}
	d1, d2 := id("d1"), id("d2")
	t0 := nowMillis()
	heartbeat(t, s, a, d1, t0, 10*time.Second, true)
	heartbeat(t, s, b, d1, t0, 10*time.Second, true)
	heartbeat(t, s, b, d2, t0+sec, 60*time.Second, false)
	heartbeat(t, s, c, d1, t0+2*sec, 60*time.Second, true)
	heartbeat(t, s, e, d1, t0+3*sec, 10*time.Second, true)
	offline(t, s, e, d1, t0+4*sec, true)

	wantExpired(t, t0+5*sec, expire(t, s, t0+5*sec, mine...), nil)
	wantExpired(t, t0+20*sec, expire(t, s, t0+20*sec, mine...), map[string]int64{a: t0})
	wantExpired(t, t0+20*sec+1, expire(t, s, t0+20*sec+1, mine...), nil)
	lookup(t, s, a, t0+20*sec, false, t0)
	lookup(t, s, b, t0+20*sec, true, t0+sec)
	lookup(t, s, c, t0+20*sec, true, t0+2*sec)
	wantExpired(t, t0+70*sec, expire(t, s, t0+70*sec, mine...), map[string]int64{b: t0 + sec, c: t0 + 2*sec})
	wantExpired(t, t0+80*sec, expire(t, s, t0+80*sec, mine...), nil)
	lookup(t, s, b, t0+80*sec, false, t0+sec)
	lookup(t, s, e, t0+80*sec, false, t0+4*sec)
}

// testExpireConcurrent: "Any node may call it; a user is returned by at most one of
// concurrent callers" — and, with "each once", by exactly one. Enough users that an
// implementation working in batches needs several; every fifth keeps a live device and
// must not be returned.
func testExpireConcurrent(t *testing.T, s state.State) {
	const users, callers = 600, 8
	t0 := nowMillis()
	var mine []string
	want := map[string]int64{}
	for i := range users {
		u := id(fmt.Sprintf("u%d", i))
		mine = append(mine, u)
		hb := t0 + int64(i)
		heartbeat(t, s, u, "phone", hb, time.Second, true)
		if i%5 == 0 {
			heartbeat(t, s, u, "laptop", hb, time.Hour, false)
		} else {
			want[u] = hb
		}
	}
	now := t0 + 60*sec
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
		mu    sync.Mutex
		seen  = map[string]int{}
		got   = map[string]state.UserPresence{}
		errs  []error
	)
	for range callers {
		wg.Go(func() {
			<-start
			ps, err := s.Expire(ctx(t), now)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
			}
			for _, p := range ps {
				if slices.Contains(mine, p.UserID) {
					seen[p.UserID]++
					got[p.UserID] = p
				}
			}
		})
	}
	close(start)
	wg.Wait()
	for _, err := range errs {
		t.Errorf("concurrent Expire: %v", err)
	}
	for u, n := range seen {
		if n > 1 {
			t.Errorf("%s returned by %d of %d concurrent Expire calls, want 1", u, n, callers)
		}
	}
	wantExpired(t, now, got, want)
	if t.Failed() {
		return
	}
	wantExpired(t, now+1, expire(t, s, now+1, mine...), nil)
}

// testHeartbeatAfterExpire: a user Expire took offline comes back online with a heartbeat
// (announced), and can expire again.
func testHeartbeatAfterExpire(t *testing.T, s state.State) {
	u, d := id("u"), id("d")
	t0 := nowMillis()
	heartbeat(t, s, u, d, t0, 10*time.Second, true)
	wantExpired(t, t0+20*sec, expire(t, s, t0+20*sec, u), map[string]int64{u: t0})
	heartbeat(t, s, u, d, t0+21*sec, 10*time.Second, true)
	lookup(t, s, u, t0+21*sec, true, t0+21*sec)
	wantExpired(t, t0+25*sec, expire(t, s, t0+25*sec, u), nil)
	wantExpired(t, t0+40*sec, expire(t, s, t0+40*sec, u), map[string]int64{u: t0 + 21*sec})
}

// testLookup: results in the order asked (repeats included); a never-seen user is offline
// with LastSeenTS 0; an empty request gets an empty answer.
func testLookup(t *testing.T, s state.State) {
	on, off, never := id("on"), id("off"), id("never")
	t0 := nowMillis()
	heartbeat(t, s, on, "d", t0+5, 30*time.Second, true)
	heartbeat(t, s, off, "d", t0, 30*time.Second, true)
	offline(t, s, off, "d", t0+7, true)
	ids := []string{off, never, on, off}
	got, err := s.Lookup(ctx(t), ids, t0+10)
	if err != nil {
		t.Fatalf("Lookup: %v", err)
	}
	want := []state.UserPresence{
		{UserID: off, Online: false, LastSeenTS: t0 + 7},
		{UserID: never, Online: false, LastSeenTS: 0},
		{UserID: on, Online: true, LastSeenTS: t0 + 5},
		{UserID: off, Online: false, LastSeenTS: t0 + 7},
	}
	if !slices.Equal(got, want) {
		t.Errorf("Lookup(%q) =\n %+v\nwant\n %+v", ids, got, want)
	}
	got, err = s.Lookup(ctx(t), nil, t0)
	if err != nil || len(got) != 0 {
		t.Errorf("Lookup(nil) = %v, %v; want empty, nil", got, err)
	}
}

// ---- Limits ----

// testAllowBurst: a fresh bucket allows burst takes at one instant, then refuses with
// retryAfter "how long until one will be": a take that much later succeeds, and (the wait
// being at least a millisecond) one a millisecond earlier is still refused.
func testAllowBurst(t *testing.T, s state.State) {
	for _, tc := range []struct {
		rate  float64
		burst int
		max   time.Duration // the exact wait for one token from empty
	}{
		{2, 3, 500 * time.Millisecond},
		{10, 1, 100 * time.Millisecond},
		{3, 5, 334 * time.Millisecond}, // 333.3…ms, whole milliseconds at most one over
		{0.5, 2, 2 * time.Second},
	} {
		key := id("burst")
		t0 := nowMillis()
		retry := drain(t, s, key, tc.rate, tc.burst, tc.burst, t0)
		if retry <= 0 || retry > tc.max || retry < tc.max-time.Millisecond {
			t.Errorf("rate %v burst %d: retryAfter = %v, want about %v", tc.rate, tc.burst, retry, tc.max)
			continue
		}
		ms := retry.Milliseconds()
		if ok, _ := allow(t, s, key, tc.rate, tc.burst, t0+ms-1); ok {
			t.Errorf("rate %v burst %d: allowed %dms after draining, before retryAfter %v", tc.rate, tc.burst, ms-1, retry)
		}
		if ok, r := allow(t, s, key, tc.rate, tc.burst, t0+ms); !ok {
			t.Errorf("rate %v burst %d: refused (retryAfter %v) at retryAfter %v after draining", tc.rate, tc.burst, r, retry)
		}
	}
}

// testAllowRefill: the bucket refills at rate tokens per second over passed-in time, never
// beyond burst.
func testAllowRefill(t *testing.T, s state.State) {
	key := id("refill")
	const rate, burst = 10, 5
	t0 := nowMillis()
	drain(t, s, key, rate, burst, burst, t0)
	drain(t, s, key, rate, burst, 1, t0+100)          // 100ms: one token
	drain(t, s, key, rate, burst, 2, t0+350)          // 250ms more: 2.5 tokens
	drain(t, s, key, rate, burst, 3, t0+600)          // 0.5 left + 250ms: 3 tokens
	drain(t, s, key, rate, burst, burst, t0+10*sec)   // 100 tokens' worth: full, not fuller
	drain(t, s, key, rate, burst, burst, t0+3600*sec) // an hour: the same
}

// testAllowKeys: buckets of different keys are independent.
func testAllowKeys(t *testing.T, s state.State) {
	k1, k2 := id("login:alice"), id("login:bob")
	t0 := nowMillis()
	drain(t, s, k1, 1, 2, 2, t0)
	drain(t, s, k2, 1, 2, 2, t0)
	drain(t, s, id("typing:u:c"), 1, 4, 4, t0)
}

// testAllowConcurrent: concurrent takes from one bucket at one instant grant exactly burst
// tokens in all.
func testAllowConcurrent(t *testing.T, s state.State) {
	const goroutines, each, burst = 16, 5, 20
	key := id("concurrent")
	now := nowMillis()
	var (
		wg      sync.WaitGroup
		start   = make(chan struct{})
		mu      sync.Mutex
		granted int
		errs    []error
	)
	for range goroutines {
		wg.Go(func() {
			<-start
			for range each {
				ok, _, err := s.Allow(ctx(t), key, 1, burst, now)
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else if ok {
					granted++
				}
				mu.Unlock()
			}
		})
	}
	close(start)
	wg.Wait()
	for _, err := range errs {
		t.Errorf("concurrent Allow: %v", err)
	}
	if granted != burst {
		t.Errorf("%d concurrent takes from a bucket of %d at one instant: %d granted, want %d", goroutines*each, burst, granted, burst)
	}
}

// ---- Tokens ----

func put(t *testing.T, s state.State, key, value string, now int64, ttl time.Duration) {
	t.Helper()
	if err := s.PutToken(ctx(t), key, value, now, ttl); err != nil {
		t.Fatalf("PutToken(%s, %v): %v", key, ttl, err)
	}
}

func take(t *testing.T, s state.State, key string, now int64, wantValue string, wantOK bool) {
	t.Helper()
	v, ok, err := s.TakeToken(ctx(t), key, now)
	if err != nil {
		t.Fatalf("TakeToken(%s): %v", key, err)
	}
	if v != wantValue || ok != wantOK {
		t.Errorf("TakeToken(%s) = %q, %v; want %q, %v", key, v, ok, wantValue, wantOK)
	}
}

// testTokenTakeOnce: a stored value is taken once; a key never stored is not found.
func testTokenTakeOnce(t *testing.T, s state.State) {
	k := id("ticket")
	now := nowMillis()
	put(t, s, k, "value-1", now, time.Minute)
	take(t, s, k, now+1, "value-1", true)
	take(t, s, k, now+2, "", false)
	take(t, s, id("never"), now, "", false)
	put(t, s, id("empty"), "", now, time.Minute) // the empty value is a value
}

// testTokenExists: PutToken of a stored, unexpired key fails with ErrExists and leaves the
// stored value; once taken, the key may be stored again.
func testTokenExists(t *testing.T, s state.State) {
	k := id("ticket")
	now := nowMillis()
	put(t, s, k, "first", now, time.Minute)
	if err := s.PutToken(ctx(t), k, "second", now+1, time.Minute); !errors.Is(err, state.ErrExists) {
		t.Errorf("PutToken of a stored key: err = %v, want state.ErrExists", err)
	}
	take(t, s, k, now+2, "first", true)
	put(t, s, k, "third", now+3, time.Minute)
	take(t, s, k, now+4, "third", true)
}

// testTokenConcurrentTake: "of concurrent takes of one key exactly one gets ok=true".
func testTokenConcurrentTake(t *testing.T, s state.State) {
	const keys, goroutines = 10, 16
	now := nowMillis()
	for k := range keys {
		key := id("ticket")
		value := fmt.Sprintf("value-%d", k)
		put(t, s, key, value, now, time.Minute)
		var (
			wg    sync.WaitGroup
			start = make(chan struct{})
			mu    sync.Mutex
			wins  int
		)
		for range goroutines {
			wg.Go(func() {
				<-start
				v, ok, err := s.TakeToken(ctx(t), key, now)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err != nil:
					t.Errorf("concurrent TakeToken: %v", err)
				case ok && v != value:
					t.Errorf("concurrent TakeToken got %q, want %q", v, value)
				case ok:
					wins++
				}
			})
		}
		close(start)
		wg.Wait()
		if wins != 1 {
			t.Errorf("key %d: %d of %d concurrent takes got the value, want exactly 1", k, wins, goroutines)
		}
	}
}

// testTokenExpires: "An expired key is not found", and an expired key may be stored again
// (ErrExists is only for keys "stored and not expired"). An implementation may expire keys
// by its own clock (Redis does), so this test passes the real time as now and really waits.
func testTokenExpires(t *testing.T, s state.State) {
	short, long := id("short"), id("long")
	const ttl = 100 * time.Millisecond
	put(t, s, short, "gone", nowMillis(), ttl)
	put(t, s, long, "kept", nowMillis(), time.Minute)
	time.Sleep(3 * ttl)
	take(t, s, short, nowMillis(), "", false)
	again := id("again")
	put(t, s, again, "x", nowMillis(), ttl)
	time.Sleep(3 * ttl)
	put(t, s, again, "y", nowMillis(), time.Minute) // expired, so not ErrExists
	take(t, s, again, nowMillis(), "y", true)
	take(t, s, long, nowMillis(), "kept", true)
}

// testTokenPeek: PeekToken finds a stored value without taking it, and not a taken, an
// expired or a never-stored one.
func testTokenPeek(t *testing.T, s state.State) {
	peek := func(key string, wantValue string, wantOK bool) {
		t.Helper()
		v, ok, err := s.PeekToken(ctx(t), key, nowMillis())
		if err != nil || v != wantValue || ok != wantOK {
			t.Errorf("PeekToken(%s) = %q, %v, %v; want %q, %v", key, v, ok, err, wantValue, wantOK)
		}
	}
	k, short := id("mark"), id("short")
	put(t, s, k, "v", nowMillis(), time.Minute)
	peek(k, "v", true)
	peek(k, "v", true) // still there
	take(t, s, k, nowMillis(), "v", true)
	peek(k, "", false)
	peek(id("never"), "", false)
	put(t, s, short, "gone", nowMillis(), 100*time.Millisecond)
	time.Sleep(300 * time.Millisecond)
	peek(short, "", false)
}

// ---- Close ----

// testClose: "ErrClosed is returned by calls after Close" — by every method.
func testClose(t *testing.T, s state.State) {
	now := nowMillis()
	heartbeat(t, s, id("u"), "d", now, time.Minute, true)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	c := ctx(t)
	_, err := s.Heartbeat(c, "u", "d", now, time.Minute)
	wantClosed(t, "Heartbeat", err)
	_, err = s.Offline(c, "u", "d", now)
	wantClosed(t, "Offline", err)
	_, err = s.Expire(c, now)
	wantClosed(t, "Expire", err)
	_, err = s.Lookup(c, []string{"u"}, now)
	wantClosed(t, "Lookup", err)
	_, _, err = s.Allow(c, "k", 1, 1, now)
	wantClosed(t, "Allow", err)
	wantClosed(t, "PutToken", s.PutToken(c, "k", "v", now, time.Minute))
	_, _, err = s.TakeToken(c, "k", now)
	wantClosed(t, "TakeToken", err)
	_, _, err = s.PeekToken(c, "k", now)
	wantClosed(t, "PeekToken", err)
}
