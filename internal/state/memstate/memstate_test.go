package memstate_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/parley-chat/parley/internal/state"
	"github.com/parley-chat/parley/internal/state/memstate"
	"github.com/parley-chat/parley/internal/state/statetest"
)

func TestConformance(t *testing.T) {
	statetest.Run(t, func(t *testing.T) state.State { return memstate.New() })
}

// TestInvalidArguments: a non-positive TTL, rate or burst is a programming error, reported
// rather than stored as something that can never expire or refill.
func TestInvalidArguments(t *testing.T) {
	s := memstate.New()
	defer s.Close()
	ctx := context.Background()
	if _, err := s.Heartbeat(ctx, "u", "d", 1, 0); err == nil {
		t.Error("Heartbeat with TTL 0 succeeded")
	}
	if err := s.PutToken(ctx, "secret-key", "v", 1, -time.Second); err == nil {
		t.Error("PutToken with negative TTL succeeded")
	} else if errors.Is(err, state.ErrExists) {
		t.Errorf("PutToken with negative TTL: %v", err)
	}
	for _, tc := range []struct {
		rate  float64
		burst int
	}{{0, 1}, {-1, 1}, {1, 0}, {math.Inf(1), 1}, {math.NaN(), 1}} {
		if _, _, err := s.Allow(ctx, "k", tc.rate, tc.burst, 1); err == nil {
			t.Errorf("Allow(rate %v, burst %d) succeeded", tc.rate, tc.burst)
		}
	}
}

// TestTokenErrorHidesKey: token keys are secrets (WebSocket tickets) and stay out of errors.
func TestTokenErrorHidesKey(t *testing.T) {
	s := memstate.New()
	defer s.Close()
	ctx := context.Background()
	const key = "ticket-hunter2"
	if err := s.PutToken(ctx, key, "v", 1, time.Minute); err != nil {
		t.Fatal(err)
	}
	for _, err := range []error{
		s.PutToken(ctx, key, "v", 2, time.Minute),
		s.PutToken(ctx, key, "v", 2, 0),
	} {
		if err == nil || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("error %v: want an error that does not repeat the key", err)
		}
	}
}

// TestTokenExpiryByNow: memstate judges token expiry by the caller's now (the suite can only
// check that with the real clock, because Redis uses its own): a token stored until now+ttl
// is gone at exactly that time, and may then be stored again.
func TestTokenExpiryByNow(t *testing.T) {
	s := memstate.New()
	defer s.Close()
	ctx := context.Background()
	for _, k := range []string{"a", "b"} {
		if err := s.PutToken(ctx, k, "v", 1000, 100*time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	if v, ok, err := s.TakeToken(ctx, "a", 1099); err != nil || !ok || v != "v" {
		t.Errorf("TakeToken 1ms before expiry = %q, %v, %v", v, ok, err)
	}
	if err := s.PutToken(ctx, "b", "w", 1099, time.Second); !errors.Is(err, state.ErrExists) {
		t.Errorf("PutToken 1ms before expiry: %v, want ErrExists", err)
	}
	if err := s.PutToken(ctx, "b", "w", 1100, time.Second); err != nil {
		t.Errorf("PutToken at expiry: %v, want nil", err)
	}
	if err := s.PutToken(ctx, "c", "v", 1000, time.Microsecond); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.TakeToken(ctx, "c", 1000); !ok {
		t.Error("a TTL under a millisecond expired at once; want it rounded up to 1ms")
	}
	if err := s.PutToken(ctx, "d", "v", 1000, time.Second); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.TakeToken(ctx, "d", 2000); ok {
		t.Error("TakeToken at expiry found the token")
	}
}

// TestLimitsAndTokensForgotten: buckets full for a while and expired tokens are collected by
// later calls, without a background goroutine, so memory does not grow with keys ever used.
func TestLimitsAndTokensForgotten(t *testing.T) {
	s := memstate.New()
	defer s.Close()
	ctx := context.Background()
	const n = 1000
	t0 := int64(1_000_000)
	for i := range n {
		if _, _, err := s.Allow(ctx, fmt.Sprintf("k%d", i), 10, 2, t0); err != nil {
			t.Fatal(err)
		}
		if err := s.PutToken(ctx, fmt.Sprintf("t%d", i), "v", t0, time.Second); err != nil {
			t.Fatal(err)
		}
	}
	// An hour later, every bucket is full and every token expired: calls on other keys
	// collect them a few at a time.
	later := t0 + 3_600_000
	for i := range n {
		if _, _, err := s.Allow(ctx, "other", 1e6, 1, later+int64(i)); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.TakeToken(ctx, "none", later); err != nil {
			t.Fatal(err)
		}
	}
	if b, tok := memstate.Sizes(s); b > 1 || tok > 0 {
		t.Errorf("after collection: %d buckets, %d tokens left; want 1 (the key in use) and 0", b, tok)
	}
}

// TestExpireIndexConsistent exercises the expiry heap with many interleaved heartbeats,
// offlines and expiries, checking Expire against a model after every step.
func TestExpireIndexConsistent(t *testing.T) {
	s := memstate.New()
	defer s.Close()
	ctx := context.Background()
	type key struct{ u, d int }
	model := map[key]int64{} // device → expiry
	seen := map[int]int64{}
	now := int64(1_000_000)
	rng := rand.New(rand.NewPCG(1, 2))
	for step := range 50_000 {
		now += rng.Int64N(6)
		u, d := rng.IntN(50), rng.IntN(3)
		switch op := rng.IntN(20); {
		case op < 12:
			ttl := time.Duration(1+rng.IntN(300)) * time.Millisecond
			if _, err := s.Heartbeat(ctx, fmt.Sprint(u), fmt.Sprint(d), now, ttl); err != nil {
				t.Fatal(err)
			}
			model[key{u, d}] = now + ttl.Milliseconds()
			seen[u] = max(seen[u], now)
		case op < 15:
			went, err := s.Offline(ctx, fmt.Sprint(u), fmt.Sprint(d), now)
			if err != nil {
				t.Fatal(err)
			}
			_, had := model[key{u, d}]
			delete(model, key{u, d})
			live := false
			for k, e := range model {
				if k.u == u && e > now {
					live = true
				}
			}
			if had {
				seen[u] = max(seen[u], now)
				if !live {
					for k := range model {
						if k.u == u {
							delete(model, k)
						}
					}
				}
			}
			if want := had && !live; went != want {
				t.Fatalf("step %d: Offline(%d, %d) = %v, want %v", step, u, d, went, want)
			}
		default:
			got, err := s.Expire(ctx, now)
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]int64{}
			hadDevice, live := map[int]bool{}, map[int]bool{}
			for k, e := range model {
				if e <= now {
					hadDevice[k.u] = true
					delete(model, k)
				} else {
					live[k.u] = true
				}
			}
			for u := range hadDevice {
				if !live[u] {
					want[fmt.Sprint(u)] = seen[u]
				}
			}
			if len(got) != len(want) {
				t.Fatalf("step %d: Expire returned %d users, want %d: %v vs %v", step, len(got), len(want), got, want)
			}
			for _, p := range got {
				if ls, ok := want[p.UserID]; !ok || ls != p.LastSeenTS || p.Online {
					t.Fatalf("step %d: Expire returned %+v, want %v", step, p, want)
				}
			}
		}
	}
}

const benchUsers = 20_000

// populate puts benchUsers users online at t0, with expiries spread evenly over ttl.
func populate(b *testing.B, s *memstate.State, t0 int64, ttl time.Duration) []string {
	b.Helper()
	users := make([]string, benchUsers)
	step := ttl.Milliseconds() / benchUsers
	for i := range users {
		users[i] = fmt.Sprintf("user-%05d", i)
		if _, err := s.Heartbeat(context.Background(), users[i], "phone", t0+int64(i)*step, ttl); err != nil {
			b.Fatal(err)
		}
	}
	return users
}

// BenchmarkHeartbeat: a heartbeat of one of 20,000 online users (the steady state: every
// connection pings every few seconds).
func BenchmarkHeartbeat(b *testing.B) {
	s := memstate.New()
	defer s.Close()
	ctx := context.Background()
	t0 := int64(1_000_000)
	users := populate(b, s, t0, 30*time.Second)
	now := t0 + 30_000
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := s.Heartbeat(ctx, users[i%benchUsers], "phone", now+int64(i/benchUsers), 30*time.Second); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkExpire: Expire over 20,000 online users, with nothing due (the usual sweep),
// with 1% due (a busy sweep), and with all due (a mass disconnect).
func BenchmarkExpire(b *testing.B) {
	ctx := context.Background()
	const ttl = 100 * time.Second
	t0 := int64(1_000_000)
	b.Run("none-due-of-20k", func(b *testing.B) {
		s := memstate.New()
		defer s.Close()
		populate(b, s, t0, ttl)
		b.ReportAllocs()
		for b.Loop() {
			if ps, err := s.Expire(ctx, t0+ttl.Milliseconds()-1); err != nil || len(ps) != 0 {
				b.Fatal(len(ps), err)
			}
		}
	})
	b.Run("200-due-of-20k", func(b *testing.B) {
		// Expiries are spread over 100s, so each second 1% of the users are due. Each
		// iteration advances a second, expires them, and brings them back. ns/op includes
		// the 200 heartbeats; expire-ns/op is Expire alone (timed by hand: StopTimer with
		// ReportAllocs reads memory statistics, which would swamp it).
		s := memstate.New()
		defer s.Close()
		populate(b, s, t0, ttl)
		now := t0 + ttl.Milliseconds() + 995 // users 0-199 (heartbeats 5ms apart) are due
		var inExpire time.Duration
		b.ReportAllocs()
		for b.Loop() {
			start := time.Now()
			ps, err := s.Expire(ctx, now)
			inExpire += time.Since(start)
			if err != nil || len(ps) != benchUsers/100 {
				b.Fatalf("expired %d users, want %d (err %v)", len(ps), benchUsers/100, err)
			}
			for _, p := range ps {
				if _, err := s.Heartbeat(ctx, p.UserID, "phone", now, ttl); err != nil {
					b.Fatal(err)
				}
			}
			now += 1000
		}
		b.ReportMetric(float64(inExpire.Nanoseconds())/float64(b.N), "expire-ns/op")
	})
	b.Run("all-20k-due", func(b *testing.B) {
		s := memstate.New()
		defer s.Close()
		now := t0
		b.ReportAllocs()
		for b.Loop() {
			b.StopTimer()
			populate(b, s, now, time.Second)
			now += 10_000
			b.StartTimer()
			if ps, err := s.Expire(ctx, now); err != nil || len(ps) != benchUsers {
				b.Fatal(len(ps), err)
			}
		}
	})
}

// BenchmarkAllow: a take from one of 20,000 buckets.
func BenchmarkAllow(b *testing.B) {
	s := memstate.New()
	defer s.Close()
	ctx := context.Background()
	keys := make([]string, benchUsers)
	for i := range keys {
		keys[i] = fmt.Sprintf("typing:user-%05d", i)
	}
	b.ReportAllocs()
	i := 0
	now := int64(1_000_000)
	for b.Loop() {
		if _, _, err := s.Allow(ctx, keys[i%benchUsers], 5, 10, now+int64(i/100)); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// TestExpireCollects: Expire, which the server calls on a clock, frees every bucket and token
// that is due, even when no later call touches the limits: what strangers caused is not kept
// until someone else happens to come along.
func TestExpireCollects(t *testing.T) {
	s := memstate.New()
	defer s.Close()
	ctx := context.Background()
	t0 := int64(1_000_000)
	for i := range 5000 {
		if _, _, err := s.Allow(ctx, fmt.Sprintf("login:%d", i), 0.1, 10, t0); err != nil {
			t.Fatal(err)
		}
		if err := s.PutToken(ctx, fmt.Sprintf("t%d", i), "v", t0, time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Expire(ctx, t0+1000); err != nil {
		t.Fatal(err)
	}
	if b, _ := memstate.Sizes(s); b != 5000 {
		t.Fatalf("buckets not yet full were collected: %d left of 5000", b)
	}
	if _, err := s.Expire(ctx, t0+3_600_000); err != nil {
		t.Fatal(err)
	}
	if b, tok := memstate.Sizes(s); b != 0 || tok != 0 {
		t.Fatalf("after Expire an hour on: %d buckets, %d tokens; want 0 and 0", b, tok)
	}
}

// TestBucketCountBounded: however many keys clients cause, the buckets held stay under the
// cap, and the one dropped to make room is the one closest to being forgotten: not a bucket
// drained after its first use (an account being guessed at), whose expiry entry still says
// "soon" until it is put right.
func TestBucketCountBounded(t *testing.T) {
	s := memstate.New()
	defer s.Close()
	memstate.SetMaxBuckets(s, 100)
	ctx := context.Background()
	now := int64(1_000_000)
	// The victim's bucket: 60 attempts at once, refilling 0.5/s: full again in 2 minutes.
	for range 60 {
		s.Allow(ctx, "account:victim", 0.5, 60, now)
	}
	// A flood of strangers' keys, each used once: full again in 2 s.
	for i := range 1000 {
		if _, _, err := s.Allow(ctx, fmt.Sprintf("stranger:%d", i), 0.5, 30, now+int64(i)); err != nil {
			t.Fatal(err)
		}
	}
	if b, _ := memstate.Sizes(s); b > 100 {
		t.Fatalf("%d buckets held, cap 100", b)
	}
	if ok, _, _ := s.Allow(ctx, "account:victim", 0.5, 60, now+1000); ok {
		t.Fatal("the drained bucket was dropped for strangers' keys (it allowed again)")
	}
}
