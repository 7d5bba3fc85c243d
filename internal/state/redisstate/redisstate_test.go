package redisstate_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/parley-chat/parley/internal/state"
	"github.com/parley-chat/parley/internal/state/redisstate"
	"github.com/parley-chat/parley/internal/state/statetest"
)

// redisURL is the Redis the tests use: PARLEY_TEST_REDIS_URL, by default a local one.
func redisURL() string {
	if u := os.Getenv("PARLEY_TEST_REDIS_URL"); u != "" {
		return u
	}
	return "redis://127.0.0.1:6379/0"
}

// needRedis skips t (or, with PARLEY_TEST_REQUIRE_SERVICES=1, fails it) if no Redis answers
// at redisURL.
func needRedis(t testing.TB) {
	t.Helper()
	opt, err := redis.ParseURL(redisURL())
	if err != nil {
		t.Fatalf("PARLEY_TEST_REDIS_URL: %v", err)
	}
	c := redis.NewClient(opt)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		if os.Getenv("PARLEY_TEST_REQUIRE_SERVICES") == "1" {
			t.Fatalf("Redis at %s (PARLEY_TEST_REDIS_URL) unreachable and PARLEY_TEST_REQUIRE_SERVICES=1: %v", opt.Addr, err)
		}
		t.Skipf("skipping: no Redis at %s (set PARLEY_TEST_REDIS_URL, or PARLEY_TEST_REQUIRE_SERVICES=1 to fail instead): %v", opt.Addr, err)
	}
}

// open returns a State under a prefix no other test or run uses, whose keys are deleted
// when the test ends.
func open(t testing.TB) *redisstate.State {
	t.Helper()
	s, _ := openPrefix(t)
	return s
}

// openPrefix is open, also returning the prefix.
func openPrefix(t testing.TB) (*redisstate.State, string) {
	t.Helper()
	var r [8]byte
	_, _ = rand.Read(r[:])
	prefix := "parleytest:" + hex.EncodeToString(r[:]) + ":"
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := redisstate.New(ctx, redisURL(), prefix)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { deleteKeys(t, prefix) })
	return s, prefix
}

// deleteKeys deletes every key under prefix (which holds no glob metacharacters).
func deleteKeys(t testing.TB, prefix string) {
	t.Helper()
	opt, err := redis.ParseURL(redisURL())
	if err != nil {
		t.Errorf("cleanup: %v", err)
		return
	}
	c := redis.NewClient(opt)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Errorf("cleanup: scan %s*: %v", prefix, err)
		return
	}
	for len(keys) > 0 {
		n := min(len(keys), 1000)
		if err := c.Del(ctx, keys[:n]...).Err(); err != nil {
			t.Errorf("cleanup: delete %d keys under %s: %v", n, prefix, err)
			return
		}
		keys = keys[n:]
	}
}

// TestConformance runs the state suite against the Redis at PARLEY_TEST_REDIS_URL (default
// redis://127.0.0.1:6379/0). It skips when none answers, unless
// PARLEY_TEST_REQUIRE_SERVICES=1.
func TestConformance(t *testing.T) {
	needRedis(t)
	statetest.Run(t, func(t *testing.T) state.State { return open(t) })
}

// TestKeysUnderPrefix: everything the State writes is under its prefix (so deployments and
// test runs can share a Redis), and cleanup leaves nothing behind.
func TestKeysUnderPrefix(t *testing.T) {
	needRedis(t)
	var r [8]byte
	_, _ = rand.Read(r[:])
	prefix := "parleytest:" + hex.EncodeToString(r[:]) + ":"
	ctx := context.Background()
	s, err := redisstate.New(ctx, redisURL(), prefix)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.Now().UnixMilli()
	if _, err := s.Heartbeat(ctx, "u", "d", now, time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Allow(ctx, "k", 1, 2, now); err != nil {
		t.Fatal(err)
	}
	if err := s.PutToken(ctx, "t", "v", now, time.Minute); err != nil {
		t.Fatal(err)
	}
	opt, _ := redis.ParseURL(redisURL())
	c := redis.NewClient(opt)
	defer c.Close()
	keys, err := c.Keys(ctx, prefix+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 5 { // device hash, index, last seen, bucket, token
		t.Errorf("keys under %s: %q, want 5", prefix, keys)
	}
	deleteKeys(t, prefix)
	if keys, _ := c.Keys(ctx, prefix+"*").Result(); len(keys) != 0 {
		t.Errorf("after cleanup: %q", keys)
	}
}

// TestBucketForgotten: a rate-limit bucket gets a Redis TTL of the time until it is full
// again plus a grace period, so buckets do not accumulate.
func TestBucketForgotten(t *testing.T) {
	needRedis(t)
	s, prefix := openPrefix(t)
	defer s.Close()
	ctx := context.Background()
	if _, _, err := s.Allow(ctx, "login:x", 0.5, 3, time.Now().UnixMilli()); err != nil {
		t.Fatal(err)
	}
	opt, _ := redis.ParseURL(redisURL())
	c := redis.NewClient(opt)
	defer c.Close()
	keys, err := c.Keys(ctx, prefix+"limit:login:x").Result()
	if err != nil || len(keys) != 1 {
		t.Fatalf("bucket key not found: %v %v", keys, err)
	}
	for _, k := range keys {
		ttl, err := c.PTTL(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		if ttl <= 0 || ttl > 2*time.Second+time.Minute {
			t.Errorf("%s: PTTL %v, want up to 2s (to full) + 1m", k, ttl)
		}
	}
}

// TestExpireManyBatches: Expire reports every user even when they take many script runs.
func TestExpireManyBatches(t *testing.T) {
	needRedis(t)
	s := open(t)
	defer s.Close()
	ctx := context.Background()
	const n = 2000
	t0 := time.Now().UnixMilli()
	for i := range n {
		if _, err := s.Heartbeat(ctx, fmt.Sprint("u", i), "d", t0+int64(i), time.Second); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Expire(ctx, t0+60_000)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, p := range got {
		if seen[p.UserID] {
			t.Errorf("%s returned twice", p.UserID)
		}
		seen[p.UserID] = true
	}
	if len(seen) != n {
		t.Errorf("Expire returned %d users, want %d", len(seen), n)
	}
}

func TestInvalidArguments(t *testing.T) {
	needRedis(t)
	s := open(t)
	defer s.Close()
	ctx := context.Background()
	if _, err := s.Heartbeat(ctx, "u", "d", 1, 0); err == nil {
		t.Error("Heartbeat with TTL 0 succeeded")
	}
	if err := s.PutToken(ctx, "k", "v", 1, -time.Second); err == nil {
		t.Error("PutToken with negative TTL succeeded")
	}
	for _, tc := range []struct {
		rate  float64
		burst int
	}{{0, 1}, {-1, 1}, {1, 0}} {
		if _, _, err := s.Allow(ctx, "k", tc.rate, tc.burst, 1); err == nil {
			t.Errorf("Allow(rate %v, burst %d) succeeded", tc.rate, tc.burst)
		}
	}
}

func TestNewErrorHidesPassword(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	for _, url := range []string{
		"redis://parley:hunter2@127.0.0.1:1/0",       // nothing listens
		"redis://parley:hunter2@127.0.0.1:port/0",    // malformed port
		"redis://parley:hunter2@127.0.0.1:6379/zero", // bad database
	} {
		s, err := redisstate.New(ctx, url, "parleytest:")
		if err == nil {
			s.Close()
			t.Errorf("New(%s) succeeded", url)
			continue
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("error repeats the password: %v", err)
		}
		t.Logf("%v", err)
	}
}

func TestCloseTwice(t *testing.T) {
	needRedis(t)
	s := open(t)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := s.Lookup(context.Background(), nil, 0); !errors.Is(err, state.ErrClosed) {
		t.Errorf("Lookup(nil) after Close: %v, want ErrClosed", err)
	}
}

// BenchmarkHeartbeat: one heartbeat round trip to Redis, from one goroutine and from many
// (a node serves many connections at once).
func BenchmarkHeartbeat(b *testing.B) {
	needRedis(b)
	s := open(b)
	defer s.Close()
	ctx := context.Background()
	const users = 20_000
	ids := make([]string, users)
	for i := range ids {
		ids[i] = fmt.Sprintf("user-%05d", i)
	}
	now := time.Now().UnixMilli()
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, err := s.Heartbeat(ctx, ids[i%users], "phone", now, 30*time.Second); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			var r [2]byte
			_, _ = rand.Read(r[:])
			i := int(r[0])<<8 | int(r[1])
			for pb.Next() {
				if _, err := s.Heartbeat(ctx, ids[i%users], "phone", now, 30*time.Second); err != nil {
					b.Error(err)
					return
				}
				i++
			}
		})
	})
}

// TestCloseStopsGoroutines: whatever goroutines the Redis client starts, Close stops them.
func TestCloseStopsGoroutines(t *testing.T) {
	needRedis(t)
	before := runtime.NumGoroutine()
	for range 3 {
		s := open(t)
		ctx := context.Background()
		if _, err := s.Heartbeat(ctx, "u", "d", time.Now().UnixMilli(), time.Minute); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Lookup(ctx, []string{"u"}, time.Now().UnixMilli()); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	g := runtime.NumGoroutine()
	for g > before+1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		g = runtime.NumGoroutine()
	}
	if g > before+1 {
		var dump strings.Builder
		_ = pprof.Lookup("goroutine").WriteTo(&dump, 1)
		t.Errorf("after opening and closing 3 States: %d goroutines, %d before\n%s", g, before, dump.String())
	}
}
