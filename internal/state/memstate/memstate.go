// Package memstate implements state.State in the memory of one process: the soft state of a
// single-node Parley, lost on restart (which the state contract allows).
//
// It starts no goroutine. Presence expiry happens only in Expire, which the server calls
// periodically; rate-limit buckets and tokens are collected a few at a time by the calls
// that touch them (see sweepPerCall) and in bulk by Expire, so no call does unbounded work,
// nothing needs to be stopped, and what is due is freed on the server's clock.
//
// Presence is sized for tens of thousands of online users: each online user is one record
// holding a small slice of devices, and the records are kept in a min-heap ordered by their
// earliest device expiry, so Expire costs O(1) when nothing is due and O(k log n) for k due
// users, instead of a scan of every online user per sweep. Last-seen times are kept in a
// separate map for every user seen since the process started (a map entry and the id
// each, never pruned), because they must outlive the user's devices.
//
// Times are the caller's (now, Unix milliseconds), as the contract requires; a device or
// token whose expiry time is at or before now has expired ("online while younger than the
// TTL").
package memstate

import (
	"container/heap"
	"context"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parley-chat/parley/internal/state"
)

const (
	// sweepPerCall bounds how many due entries of the bucket or token expiry index one Allow,
	// PutToken or TakeToken call collects. Each call adds at most one entry, so collecting up
	// to eight keeps the index from accumulating a backlog of dead entries while bounding
	// the latency any single call pays for cleanup.
	sweepPerCall = 8
	// sweepPerExpire bounds the buckets and tokens one Expire collects: a sweep every few
	// seconds keeps up with far more keys per second than clients can make.
	sweepPerExpire = 1 << 16
	// maxBuckets bounds the rate-limit buckets held at once, whatever keys clients cause:
	// past it, the bucket closest to being forgotten anyway is dropped to make room (about
	// 150 bytes each with a hashed key: 150 MiB at most).
	maxBuckets = 1 << 20
	// forgetAfter is how long a rate-limit bucket stays full before it is forgotten. A
	// forgotten bucket behaves exactly like a full one, so this only trades memory against
	// robustness to callers whose clocks (now) disagree slightly.
	forgetAfter = time.Minute
	// tokenEpsilon absorbs floating-point error in a refilled bucket: 0.1+0.2 tokens must be
	// enough for a take of 0.3, and a bucket refilled for exactly 1/rate seconds must hold
	// a whole token.
	tokenEpsilon = 1e-9
	// maxMillis caps computed waits so that they convert to a time.Duration without
	// overflow (about 292 years) even for absurdly slow rates.
	maxMillis = math.MaxInt64 / int64(time.Millisecond)
)

// errClosed is what every call returns after Close.
var errClosed = fmt.Errorf("memstate: %w", state.ErrClosed)

var _ state.State = (*State)(nil)

// State is an in-memory state.State. Create it with New. All methods are safe for concurrent
// use; presence, limits and tokens each have their own lock, so they do not contend.
type State struct {
	// closed is set by Close before it clears the maps; every method checks it while
	// holding its section's lock, so none touches a cleared map.
	closed atomic.Bool

	pmu      sync.RWMutex
	online   map[string]*user // users with at least one device not yet expired or offline
	byExpiry userHeap         // the records of online, earliest device expiry first
	lastSeen map[string]int64 // every user seen since start, never pruned: at most one entry per account

	// buckets holds a bucket per key drawn on in the last forgetAfter (plus what has not been
	// collected yet: sweepPerCall per call).
	lmu        sync.Mutex
	buckets    map[string]*bucket
	bucketsDue dueHeap // exactly one entry per bucket: when it may next be forgotten
	maxBuckets int     // maxBuckets, lowered by tests

	tmu       sync.Mutex
	tokens    map[string]token
	tokensDue dueHeap // at least one entry per stored token (stale ones are skipped)
}

// New returns an empty State.
func New() *State {
	return &State{
		online:     make(map[string]*user),
		lastSeen:   make(map[string]int64),
		buckets:    make(map[string]*bucket),
		maxBuckets: maxBuckets,
		tokens:     make(map[string]token),
	}
}

// Close releases the State's memory. Later calls return an error wrapping state.ErrClosed.
// Closing twice is harmless.
func (s *State) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.pmu.Lock()
	s.online, s.byExpiry, s.lastSeen = nil, nil, nil
	s.pmu.Unlock()
	s.lmu.Lock()
	s.buckets, s.bucketsDue = nil, nil
	s.lmu.Unlock()
	s.tmu.Lock()
	s.tokens, s.tokensDue = nil, nil
	s.tmu.Unlock()
	return nil
}

// ---- Presence ----

// device is one device of an online user and the time its TTL runs out.
type device struct {
	id        string
	expiresAt int64
}

// user is the presence record of a user with at least one recorded device.
type user struct {
	id       string
	devices  []device // few per user: a slice beats a map in time and memory
	earliest int64    // min of devices[*].expiresAt: the heap key
	index    int      // position in State.byExpiry
}

// liveAt reports whether any device of u is online at now.
func (u *user) liveAt(now int64) bool {
	for _, d := range u.devices {
		if d.expiresAt > now {
			return true
		}
	}
	return false
}

// find returns the index of device id in u.devices, or -1.
func (u *user) find(id string) int {
	for i, d := range u.devices {
		if d.id == id {
			return i
		}
	}
	return -1
}

// setEarliest recomputes u.earliest; u must have at least one device.
func (u *user) setEarliest() {
	e := u.devices[0].expiresAt
	for _, d := range u.devices[1:] {
		e = min(e, d.expiresAt)
	}
	u.earliest = e
}

// Heartbeat implements state.Presence. The device's expiry becomes now+ttl (rounded up to a
// millisecond), replacing whatever an earlier heartbeat set: the contract makes the last
// heartbeat and its TTL govern, so a shorter TTL shortens.
func (s *State) Heartbeat(ctx context.Context, userID, deviceID string, now int64, ttl time.Duration) (cameOnline bool, err error) {
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("memstate: heartbeat: %w", err)
	}
	ms, err := ttlMillis(ttl)
	if err != nil {
		return false, fmt.Errorf("memstate: heartbeat of user %q: %w", userID, err)
	}
	expiresAt := now + ms
	s.pmu.Lock()
	defer s.pmu.Unlock()
	if s.closed.Load() {
		return false, errClosed
	}
	if ls, ok := s.lastSeen[userID]; !ok || now > ls {
		s.lastSeen[userID] = now
	}
	u := s.online[userID]
	if u == nil {
		u = &user{id: userID, devices: []device{{deviceID, expiresAt}}, earliest: expiresAt}
		s.online[userID] = u
		heap.Push(&s.byExpiry, u)
		return true, nil
	}
	cameOnline = !u.liveAt(now)
	if i := u.find(deviceID); i >= 0 {
		u.devices[i].expiresAt = expiresAt
	} else {
		u.devices = append(u.devices, device{deviceID, expiresAt})
	}
	u.setEarliest()
	heap.Fix(&s.byExpiry, u.index)
	return cameOnline, nil
}

// Offline implements state.Presence. wentOffline is true only for the call that ends the
// user's presence: if the device is not recorded (never heartbeated, already offline, or
// already collected by Expire) the call changes nothing and returns false, so one
// disconnect is never announced twice. When it returns true it also drops the user's
// other, expired devices, so that Expire does not announce the same departure again.
func (s *State) Offline(ctx context.Context, userID, deviceID string, now int64) (wentOffline bool, err error) {
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("memstate: offline: %w", err)
	}
	s.pmu.Lock()
	defer s.pmu.Unlock()
	if s.closed.Load() {
		return false, errClosed
	}
	u := s.online[userID]
	if u == nil {
		return false, nil
	}
	i := u.find(deviceID)
	if i < 0 {
		return false, nil
	}
	if now > s.lastSeen[userID] {
		s.lastSeen[userID] = now
	}
	last := len(u.devices) - 1
	u.devices[i] = u.devices[last]
	u.devices[last] = device{}
	u.devices = u.devices[:last]
	if !u.liveAt(now) {
		heap.Remove(&s.byExpiry, u.index)
		delete(s.online, userID)
		return true, nil
	}
	u.setEarliest()
	heap.Fix(&s.byExpiry, u.index)
	return false, nil
}

// Expire implements state.Presence. It visits only users whose earliest device expiry is
// due, so a sweep with nothing to do costs O(1). It holds one lock throughout, so each
// departing user is returned by exactly one caller.
//
// It also collects every rate-limit bucket and token that is due (up to sweepPerExpire of
// each): the server calls Expire on a clock, so what strangers made the state keep is freed
// in time even if nothing ever touches the limits again.
func (s *State) Expire(ctx context.Context, now int64) ([]state.UserPresence, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("memstate: expire: %w", err)
	}
	s.lmu.Lock()
	if !s.closed.Load() {
		s.sweepBuckets(now, sweepPerExpire)
	}
	s.lmu.Unlock()
	s.tmu.Lock()
	if !s.closed.Load() {
		s.sweepTokens(now, sweepPerExpire)
	}
	s.tmu.Unlock()
	s.pmu.Lock()
	defer s.pmu.Unlock()
	if s.closed.Load() {
		return nil, errClosed
	}
	var gone []state.UserPresence
	for len(s.byExpiry) > 0 && s.byExpiry[0].earliest <= now {
		u := s.byExpiry[0]
		live := u.devices[:0]
		for _, d := range u.devices {
			if d.expiresAt > now {
				live = append(live, d)
			}
		}
		clear(u.devices[len(live):]) // drop references to removed device ids
		u.devices = live
		if len(live) == 0 {
			heap.Pop(&s.byExpiry)
			delete(s.online, u.id)
			gone = append(gone, state.UserPresence{UserID: u.id, LastSeenTS: s.lastSeen[u.id]})
			continue
		}
		u.setEarliest()
		heap.Fix(&s.byExpiry, 0)
	}
	return gone, nil
}

// Lookup implements state.Presence.
func (s *State) Lookup(ctx context.Context, ids []string, now int64) ([]state.UserPresence, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("memstate: lookup: %w", err)
	}
	s.pmu.RLock()
	defer s.pmu.RUnlock()
	if s.closed.Load() {
		return nil, errClosed
	}
	out := make([]state.UserPresence, len(ids))
	for i, id := range ids {
		u := s.online[id]
		out[i] = state.UserPresence{UserID: id, Online: u != nil && u.liveAt(now), LastSeenTS: s.lastSeen[id]}
	}
	return out, nil
}

// userHeap is a min-heap of online users by earliest device expiry, for container/heap.
// It keeps each user's index up to date so a user's position can be fixed after a change.
type userHeap []*user

func (h userHeap) Len() int           { return len(h) }
func (h userHeap) Less(i, j int) bool { return h[i].earliest < h[j].earliest }
func (h userHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}

func (h *userHeap) Push(x any) {
	u := x.(*user)
	u.index = len(*h)
	*h = append(*h, u)
}

func (h *userHeap) Pop() any {
	old := *h
	n := len(old) - 1
	u := old[n]
	old[n] = nil
	*h = old[:n]
	u.index = -1
	return u
}

// ---- Limits ----

// bucket is one token bucket: tokens as of ts, and when it will be full again if nothing
// more is taken.
type bucket struct {
	tokens float64
	ts     int64
	fullAt int64
}

// take refills b up to now, takes a token if there is one, and otherwise says how long
// until there will be. redisstate's Allow script computes the same, step for step.
func (b *bucket) take(rate float64, burst int, now int64) (ok bool, retryAfter time.Duration) {
	capacity := float64(burst)
	if now > b.ts {
		b.tokens += float64(now-b.ts) * rate / 1000
		b.ts = now
	}
	b.tokens = min(b.tokens, capacity)
	if b.tokens >= 1-tokenEpsilon {
		b.tokens = max(0, b.tokens-1)
		ok = true
	} else {
		retryAfter = time.Duration(ceilMillis((1-b.tokens)*1000/rate)) * time.Millisecond
	}
	b.fullAt = b.ts + ceilMillis((capacity-b.tokens)*1000/rate)
	return ok, retryAfter
}

// Allow implements state.Limits. rate must be positive and finite, and burst at least 1:
// a bucket that never refills could never be forgotten.
func (s *State) Allow(ctx context.Context, key string, rate float64, burst int, now int64) (ok bool, retryAfter time.Duration, err error) {
	if err := ctx.Err(); err != nil {
		return false, 0, fmt.Errorf("memstate: allow: %w", err)
	}
	if err := checkLimit(rate, burst); err != nil {
		return false, 0, fmt.Errorf("memstate: allow %q: %w", key, err)
	}
	s.lmu.Lock()
	defer s.lmu.Unlock()
	if s.closed.Load() {
		return false, 0, errClosed
	}
	s.sweepBuckets(now, sweepPerCall)
	b := s.buckets[key]
	if b == nil {
		if len(s.buckets) >= s.maxBuckets {
			s.evictBucket()
		}
		b = &bucket{tokens: float64(burst), ts: now}
		ok, retryAfter = b.take(rate, burst, now)
		s.buckets[key] = b
		heap.Push(&s.bucketsDue, due{at: b.fullAt + forgetAfter.Milliseconds(), key: key})
		return ok, retryAfter, nil
	}
	ok, retryAfter = b.take(rate, burst, now)
	return ok, retryAfter, nil
}

// evictBucket drops the bucket closest to being forgotten, to make room under maxBuckets.
// Due entries are moved lazily, so the top one may be stale (its bucket was drawn on since,
// and is due later): it is put right and the heap asked again, a few times at most. Without
// that, a bucket drained after its first use (an account being guessed at) would look like
// the first to go, and a flood of new keys would reset it.
func (s *State) evictBucket() {
	for range sweepPerCall {
		d := &s.bucketsDue[0]
		b := s.buckets[d.key]
		if b == nil || b.fullAt+forgetAfter.Milliseconds() <= d.at {
			break
		}
		d.at = b.fullAt + forgetAfter.Milliseconds()
		heap.Fix(&s.bucketsDue, 0)
	}
	d := heap.Pop(&s.bucketsDue).(due)
	delete(s.buckets, d.key)
}

// sweepBuckets forgets up to n buckets that have been full for forgetAfter. A due entry
// whose bucket has since been drawn on is pushed back at its new time, so every bucket keeps
// exactly one entry.
func (s *State) sweepBuckets(now int64, n int) {
	for range n {
		if len(s.bucketsDue) == 0 || s.bucketsDue[0].at > now {
			return
		}
		d := &s.bucketsDue[0]
		b := s.buckets[d.key]
		switch {
		case b == nil: // cannot happen while the invariant holds; drop the entry
			heap.Pop(&s.bucketsDue)
		case b.fullAt+forgetAfter.Milliseconds() <= now:
			delete(s.buckets, d.key)
			heap.Pop(&s.bucketsDue)
		default:
			d.at = b.fullAt + forgetAfter.Milliseconds()
			heap.Fix(&s.bucketsDue, 0)
		}
	}
}

// ---- Tokens ----

// token is a stored one-time value.
type token struct {
	value     string
	expiresAt int64
}

// PutToken implements state.Tokens. ttl must be positive; it is rounded up to a millisecond.
func (s *State) PutToken(ctx context.Context, key, value string, now int64, ttl time.Duration) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memstate: put token: %w", err)
	}
	ms, err := ttlMillis(ttl)
	if err != nil {
		// The key is a secret (a WebSocket ticket): it is not repeated in errors.
		return fmt.Errorf("memstate: put token: %w", err)
	}
	s.tmu.Lock()
	defer s.tmu.Unlock()
	if s.closed.Load() {
		return errClosed
	}
	s.sweepTokens(now, sweepPerCall)
	if t, ok := s.tokens[key]; ok && t.expiresAt > now {
		return fmt.Errorf("memstate: put token: %w", state.ErrExists)
	}
	s.tokens[key] = token{value: value, expiresAt: now + ms}
	heap.Push(&s.tokensDue, due{at: now + ms, key: key})
	return nil
}

// TakeToken implements state.Tokens.
func (s *State) TakeToken(ctx context.Context, key string, now int64) (value string, ok bool, err error) {
	if err := ctx.Err(); err != nil {
		return "", false, fmt.Errorf("memstate: take token: %w", err)
	}
	s.tmu.Lock()
	defer s.tmu.Unlock()
	if s.closed.Load() {
		return "", false, errClosed
	}
	s.sweepTokens(now, sweepPerCall)
	t, found := s.tokens[key]
	if !found {
		return "", false, nil
	}
	delete(s.tokens, key) // taken, or expired: either way it goes (its due entry goes stale)
	if t.expiresAt <= now {
		return "", false, nil
	}
	return t.value, true, nil
}

// PeekToken implements state.Tokens.
func (s *State) PeekToken(ctx context.Context, key string, now int64) (value string, ok bool, err error) {
	if err := ctx.Err(); err != nil {
		return "", false, fmt.Errorf("memstate: peek token: %w", err)
	}
	s.tmu.Lock()
	defer s.tmu.Unlock()
	if s.closed.Load() {
		return "", false, errClosed
	}
	t, found := s.tokens[key]
	if !found || t.expiresAt <= now {
		return "", false, nil
	}
	return t.value, true, nil
}

// sweepTokens deletes up to sweepPerCall expired tokens. Entries are pushed on every put, so
// a key taken and put again has a stale entry, recognised by the stored token not being
// expired.
func (s *State) sweepTokens(now int64, n int) {
	for range n {
		if len(s.tokensDue) == 0 || s.tokensDue[0].at > now {
			return
		}
		d := heap.Pop(&s.tokensDue).(due)
		if t, ok := s.tokens[d.key]; ok && t.expiresAt <= now {
			delete(s.tokens, d.key)
		}
	}
}

// due is an entry of an expiry index: key may be collected at at.
type due struct {
	at  int64
	key string
}

// dueHeap is a min-heap of due entries by time, for container/heap.
type dueHeap []due

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].at < h[j].at }
func (h dueHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *dueHeap) Push(x any)        { *h = append(*h, x.(due)) }

func (h *dueHeap) Pop() any {
	old := *h
	n := len(old) - 1
	d := old[n]
	old[n] = due{}
	*h = old[:n]
	return d
}

// ---- helpers ----

// ttlMillis converts a positive TTL to milliseconds, rounding up so that a sub-millisecond
// TTL still means "alive at now".
func ttlMillis(ttl time.Duration) (int64, error) {
	if ttl <= 0 {
		return 0, fmt.Errorf("ttl %v is not positive", ttl)
	}
	return (int64(ttl) + int64(time.Millisecond) - 1) / int64(time.Millisecond), nil
}

// checkLimit validates Allow's rate and burst.
func checkLimit(rate float64, burst int) error {
	if !(rate > 0) || math.IsInf(rate, 1) {
		return fmt.Errorf("rate %v tokens/s is not positive and finite", rate)
	}
	if burst < 1 {
		return fmt.Errorf("burst %d is less than 1", burst)
	}
	return nil
}

// ceilMillis rounds a non-negative number of milliseconds up, capped at maxMillis.
func ceilMillis(ms float64) int64 {
	if ms >= float64(maxMillis) {
		return maxMillis
	}
	return int64(math.Ceil(ms))
}
