package natsbus_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/parley-chat/parley/internal/bus"
	"github.com/parley-chat/parley/internal/bus/bustest"
	"github.com/parley-chat/parley/internal/bus/natsbus"
)

// testLog writes warnings and errors to stderr; tests that inspect logs build their own.
func testLog() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func openEmbedded(t *testing.T, dir string) *natsbus.Bus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	b, err := natsbus.Embedded(ctx, dir, testLog())
	if err != nil {
		t.Fatalf("Embedded: %v", err)
	}
	t.Logf("embedded NATS bus started in %s", time.Since(start))
	return b
}

func TestEmbedded(t *testing.T) {
	bustest.Run(t, func(t *testing.T) bus.Bus { return openEmbedded(t, t.TempDir()) })
}

// externalURL is the NATS server the external tests use: PARLEY_TEST_NATS_URL, by default
// nats://127.0.0.1:4222.
func externalURL() string {
	if url := os.Getenv("PARLEY_TEST_NATS_URL"); url != "" {
		return url
	}
	return "nats://127.0.0.1:4222"
}

// connectExternal connects a Bus to externalURL, closed when the test ends. It skips the
// test when no server answers, unless PARLEY_TEST_REQUIRE_SERVICES=1.
func connectExternal(t *testing.T) *natsbus.Bus {
	t.Helper()
	url := externalURL()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	b, err := natsbus.Connect(ctx, url, testLog())
	if err != nil {
		if os.Getenv("PARLEY_TEST_REQUIRE_SERVICES") == "1" {
			t.Fatalf("NATS at %s (PARLEY_TEST_NATS_URL) unreachable and PARLEY_TEST_REQUIRE_SERVICES=1: %v", url, err)
		}
		t.Skipf("skipping: no NATS server at %s (set PARLEY_TEST_NATS_URL, or PARLEY_TEST_REQUIRE_SERVICES=1 to fail instead): %v", url, err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// TestExternal runs the suite against the NATS server at PARLEY_TEST_NATS_URL (default
// nats://127.0.0.1:4222). It skips when none answers, unless PARLEY_TEST_REQUIRE_SERVICES=1.
func TestExternal(t *testing.T) {
	if err := connectExternal(t).Close(); err != nil {
		t.Fatalf("Close probe connection: %v", err)
	}
	bustest.Run(t, func(t *testing.T) bus.Bus { return connectExternal(t) })
}

// TestEmbeddedStartsFast: the embedded bus is on the start-up path of every `parley serve`
// and of many tests.
func TestEmbeddedStartsFast(t *testing.T) {
	dir := t.TempDir()
	for i := range 3 { // the first start also creates the store; later ones reopen it
		start := time.Now()
		b := openEmbedded(t, dir)
		took := time.Since(start)
		closeStart := time.Now()
		if err := b.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		t.Logf("start %d: embedded bus up in %s, closed in %s", i+1, took, time.Since(closeStart))
		if took > time.Second {
			t.Errorf("start %d took %s, want well under a second", i+1, took)
		}
	}
}

// TestEmbeddedJetStreamPersists: durable streams live in the store directory and survive a
// restart.
func TestEmbeddedJetStreamPersists(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	b := openEmbedded(t, dir)
	js := b.JetStream()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "JOBS", Subjects: []string{"jobs.>"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatalf("CreateStream: %v", err)
	}
	if _, err := js.Publish(ctx, "jobs.thumbnail", []byte("media-1")); err != nil {
		t.Fatalf("JetStream Publish: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "jetstream")); err != nil {
		t.Fatalf("no JetStream data in the store directory: %v", err)
	}

	b = openEmbedded(t, dir)
	defer b.Close()
	s, err := b.JetStream().Stream(ctx, "JOBS")
	if err != nil {
		t.Fatalf("stream JOBS after restart: %v", err)
	}
	m, err := s.GetMsg(ctx, 1)
	if err != nil {
		t.Fatalf("GetMsg(1) after restart: %v", err)
	}
	if string(m.Data) != "media-1" || m.Subject != "jobs.thumbnail" {
		t.Errorf("after restart got %s=%q, want jobs.thumbnail=\"media-1\"", m.Subject, m.Data)
	}
}

// TestEmbeddedBadStoreFailsFast: an unusable store directory is reported at once, with the
// server's reason, not after a start-up timeout.
func TestEmbeddedBadStoreFailsFast(t *testing.T) {
	file := filepath.Join(t.TempDir(), "not-a-dir")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	b, err := natsbus.Embedded(context.Background(), filepath.Join(file, "store"), slog.New(slog.DiscardHandler))
	if err == nil {
		b.Close()
		t.Fatal("Embedded on a store path under a file succeeded, want an error")
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("failure took %s to report", took)
	}
	t.Logf("error: %v", err)
}

func TestCloseTwiceAndSubscribeAfterClose(t *testing.T) {
	b := openEmbedded(t, t.TempDir())
	s, err := b.Subscribe("x.y", func(string, []byte) {})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := s.Unsubscribe(); err != nil {
		t.Errorf("Unsubscribe after Close: %v", err)
	}
	if _, err := b.Subscribe("x.y", func(string, []byte) {}); !errors.Is(err, natsbus.ErrClosed) {
		t.Errorf("Subscribe after Close: got %v, want ErrClosed", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := b.Flush(ctx); err == nil {
		t.Error("Flush after Close returned nil")
	}
}

func TestFlushWithoutDeadline(t *testing.T) {
	b := openEmbedded(t, t.TempDir())
	defer b.Close()
	if err := b.Publish("x.y", []byte("z")); err != nil {
		t.Fatal(err)
	}
	if err := b.Flush(context.Background()); err != nil {
		t.Fatalf("Flush(context.Background()): %v", err)
	}
}

// BenchmarkPublishDeliver measures publish → dispatcher → handler on the embedded bus, which
// delivers in process (one copy of the payload, one queue), with at most window messages in
// flight so that the buffer never overflows.
func BenchmarkPublishDeliver(b *testing.B) {
	for _, size := range []int{64, 512} {
		b.Run(byteSize(size), func(b *testing.B) {
			bb, err := natsbus.Embedded(context.Background(), b.TempDir(), slog.New(slog.DiscardHandler))
			if err != nil {
				b.Fatal(err)
			}
			defer bb.Close()
			const window = 8192
			var got atomic.Int64
			tick := make(chan struct{}, 1)
			if _, err := bb.Subscribe("bench.user.1", func(string, []byte) {
				n := got.Add(1)
				if n%512 == 0 || n == int64(b.N) {
					select {
					case tick <- struct{}{}:
					default:
					}
				}
			}); err != nil {
				b.Fatal(err)
			}
			if err := bb.Flush(context.Background()); err != nil {
				b.Fatal(err)
			}
			payload := make([]byte, size)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for i := range b.N {
				for int64(i)-got.Load() > window {
					<-tick
				}
				if err := bb.Publish("bench.user.1", payload); err != nil {
					b.Fatal(err)
				}
			}
			for got.Load() < int64(b.N) {
				select {
				case <-tick:
				case <-time.After(10 * time.Second):
					b.Fatalf("%d of %d delivered (dropped: %d)", got.Load(), b.N, bb.Stats().Dropped)
				}
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		})
	}
}

// BenchmarkPublish measures Publish alone (no subscriber): on the embedded bus a check of the
// subject and a look-up in the Bus's own table; against an external server, nats.go's
// buffered write too.
func BenchmarkPublish(b *testing.B) {
	run := func(b *testing.B, bb *natsbus.Bus) {
		defer bb.Close()
		payload := make([]byte, 256)
		b.ReportAllocs()
		for b.Loop() {
			if err := bb.Publish("bench.nobody", payload); err != nil {
				b.Fatal(err)
			}
		}
		if err := bb.Flush(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("embedded", func(b *testing.B) {
		bb, err := natsbus.Embedded(context.Background(), b.TempDir(), slog.New(slog.DiscardHandler))
		if err != nil {
			b.Fatal(err)
		}
		run(b, bb)
	})
	b.Run("external", func(b *testing.B) {
		url := externalURL()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		bb, err := natsbus.Connect(ctx, url, slog.New(slog.DiscardHandler))
		if err != nil {
			b.Skipf("no NATS server at %s: %v", url, err)
		}
		run(b, bb)
	})
}

func byteSize(n int) string {
	return map[int]string{64: "64B", 512: "512B"}[n]
}

func TestConnectErrorHidesPassword(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := natsbus.Connect(ctx, "nats://parley:hunter2@127.0.0.1:1", nil)
	if err == nil {
		t.Fatal("Connect to a closed port succeeded")
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error repeats the password: %v", err)
	}
}

// TestEmbeddedKeepsPubSubInProcess: the embedded server has no port, so a Bus on it
// registers nothing there; a subscription costs only the Bus's own bookkeeping.
func TestEmbeddedKeepsPubSubInProcess(t *testing.T) {
	b := openEmbedded(t, t.TempDir())
	defer b.Close()
	before := b.ServerSubscriptions()
	r := make(chan string, 1)
	for i := range 1000 {
		if _, err := b.Subscribe(fmt.Sprintf("inproc.u%d", i), func(s string, _ []byte) { r <- s }); err != nil {
			t.Fatal(err)
		}
	}
	if after := b.ServerSubscriptions(); after != before {
		t.Errorf("server subscriptions %d → %d after 1,000 Subscribe calls, want no change", before, after)
	}
	if err := b.Publish("inproc.u7", []byte("x")); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-r:
		if s != "inproc.u7" {
			t.Errorf("delivered on %q, want inproc.u7", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no delivery")
	}
}

// TestExternalTwoNodes: with two Buses on one NATS server (two nodes), a publish reaches the
// publisher's own subscriber once (delivered locally, not echoed back by the server) and the
// other node's subscriber once (through NATS), for subjects and wildcards alike.
func TestExternalTwoNodes(t *testing.T) {
	nodes := []*natsbus.Bus{connectExternal(t), connectExternal(t)}
	p := fmt.Sprintf("twonodes.%d", time.Now().UnixNano())
	type key struct{ node, sub int }
	var mu sync.Mutex
	got := map[key][]string{}
	var n atomic.Int64
	for i, b := range nodes {
		for j, subj := range []string{p + ".u", p + ".>"} {
			if _, err := b.Subscribe(subj, func(s string, d []byte) {
				mu.Lock()
				got[key{i, j}] = append(got[key{i, j}], string(d))
				mu.Unlock()
				n.Add(1)
			}); err != nil {
				t.Fatal(err)
			}
		}
		if err := b.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	for i, b := range nodes {
		if err := b.Publish(p+".u", []byte(fmt.Sprintf("from%d", i))); err != nil {
			t.Fatal(err)
		}
		if err := b.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	// 2 messages × 2 nodes × 2 subscriptions each.
	deadline := time.Now().Add(5 * time.Second)
	for n.Load() < 8 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // a duplicate would arrive about now
	mu.Lock()
	defer mu.Unlock()
	for i := range nodes {
		for j := range 2 {
			g := slices.Sorted(slices.Values(got[key{i, j}]))
			if !slices.Equal(g, []string{"from0", "from1"}) {
				t.Errorf("node %d subscription %d got %q, want each node's message once", i, j, g)
			}
		}
	}
}

// TestExternalCloseDeliversBuffered: Close delivers what NATS had already handed the Bus
// (its doc says so) when the messages come from another node, through the NATS path: a
// slow handler keeps a backlog buffered when Close starts.
func TestExternalCloseDeliversBuffered(t *testing.T) {
	pub, sub := connectExternal(t), connectExternal(t)
	subject := fmt.Sprintf("closedrain.%d", time.Now().UnixNano())
	var got atomic.Int64
	if _, err := sub.Subscribe(subject, func(string, []byte) {
		time.Sleep(20 * time.Microsecond)
		got.Add(1)
	}); err != nil {
		t.Fatal(err)
	}
	if err := sub.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	const n = 2000
	for i := range n {
		if err := pub.Publish(subject, []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Close waits until the server has acknowledged the subscriber's flush, so every
	// message published above is in its buffer or delivered; then the buffer is drained.
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	if g := got.Load(); g != n {
		t.Fatalf("handler ran %d times, want %d: buffered messages were dropped at Close", g, n)
	}
	if d := sub.Stats().Dropped; d != 0 {
		t.Fatalf("%d dropped", d)
	}
}
