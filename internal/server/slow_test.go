package server

import (
	"context"
	"net"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/google/uuid"

	"github.com/parley-chat/parley/client"
	"github.com/parley-chat/parley/protocol"
)

// TestSlowReaderCutOff: a member whose client never reads its socket is disconnected once
// its bounded send queue is full, the server's memory stays bounded, and the other members'
// delivery goes on without waiting for it (their latency is logged).
func TestSlowReaderCutOff(t *testing.T) {
	ts := startServer(t, func(c *Config) {
		c.Gateway.SendQueueBytes = 1 << 20
		c.Gateway.WriteTimeout = 2 * time.Second
		c.Gateway.FramesPerSecond = 1_000_000
	})
	sender, fast, slow := ts.signup("sender"), ts.signup("fast"), ts.signup("slow")
	g := ts.group(sender, "busy", fast, slow)

	cl := client.New(ts.base)
	cl.SetTokens(fast.Tokens)
	fastConn, err := cl.Connect(context.Background(), client.WithEventBuffer(8192))
	if err != nil {
		t.Fatal(err)
	}
	defer fastConn.Close()
	var mu sync.Mutex
	var lat []time.Duration
	got := 0
	go func() {
		for ev := range fastConn.Events() {
			if ev.Type != client.EventMessage || ev.Message.Kind != protocol.KindText {
				continue
			}
			stamp, _, _ := strings.Cut(ev.Message.Body, ":")
			if ns, err := strconv.ParseInt(stamp, 10, 64); err == nil {
				mu.Lock()
				lat = append(lat, time.Since(time.Unix(0, ns)))
				got++
				mu.Unlock()
			}
		}
	}()
	senderWS := ts.dialRaw(sender.AccessToken)
	go func() { // acks: read and drop
		for {
			if _, err := senderWS.tryRead(30 * time.Second); err != nil {
				return
			}
		}
	}()
	send := func(n int, pad int, gap time.Duration) {
		for range n {
			body := strconv.FormatInt(time.Now().UnixNano(), 10) + ":" + strings.Repeat("x", pad)
			senderWS.send(protocol.ClientFrame{Type: "send", ID: uuid.NewString(), ConversationID: g.ID, Body: body})
			if gap > 0 {
				time.Sleep(gap)
			}
		}
	}
	waitFor := func(n int) []time.Duration {
		deadline := time.Now().Add(30 * time.Second)
		for {
			mu.Lock()
			if got >= n {
				out := slices.Clone(lat)
				lat, got = lat[:0], 0
				mu.Unlock()
				return out
			}
			have := got
			mu.Unlock()
			if time.Now().After(deadline) {
				t.Fatalf("fast member got %d of %d messages", have, n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	quantile := func(ds []time.Duration, q float64) time.Duration {
		slices.Sort(ds)
		return ds[int(q*float64(len(ds)-1))]
	}
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapInuse
	}

	heapBefore := heap()
	send(200, 100, time.Millisecond)
	base := waitFor(200)

	// The same flood twice: 3,000 messages of 4 KiB, far more than a member's socket
	// buffers and send queue hold. First while the third member is offline, then while it
	// is connected and never reads.
	const flood = 3000
	send(flood, 4000, 0)
	alone := waitFor(flood)
	slowWS := ts.dialRaw(slow.AccessToken)
	_ = slowWS.nc.(*net.TCPConn).SetReadBuffer(4096) // and then never read
	send(flood, 4000, 0)
	stuck := waitFor(flood)
	t.Logf("fast member's send→deliver latency: quiet p50 %v p99 %v; %d-message flood p50 %v p99 %v; same flood with a stuck member p50 %v p99 %v",
		quantile(base, 0.5), quantile(base, 0.99), flood, quantile(alone, 0.5), quantile(alone, 0.99), quantile(stuck, 0.5), quantile(stuck, 0.99))
	if a, b := quantile(alone, 0.99), quantile(stuck, 0.99); b > 3*a+200*time.Millisecond {
		t.Errorf("fast member's p99 went from %v to %v with a stuck member: it waited for the slow one", a, b)
	}

	// The stuck member is cut off; the other two connections remain.
	deadline := time.Now().Add(15 * time.Second)
	for ts.gateway.Len() != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("gateway still holds %d connections; the stuck reader was not cut off", ts.gateway.Len())
		}
		time.Sleep(20 * time.Millisecond)
	}
	heapAfter := heap()
	t.Logf("server heap in use: %d KiB before, %d KiB after", heapBefore>>10, heapAfter>>10)
	if grew := int64(heapAfter) - int64(heapBefore); grew > 64<<20 {
		t.Errorf("heap grew by %d MiB", grew>>20)
	}

	// When it finally reads, it gets what its own kernel had buffered and then the end of
	// the connection (a reset); the close frame with its reason comes too if there was room.
	_ = slowWS.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	readStart, frames := time.Now(), 0
	defer func() { t.Logf("stuck reader read %d frames in %v", frames, time.Since(readStart)) }()
	for {
		f, err := ws.ReadFrame(slowWS.r)
		frames++
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("stuck reader's connection is still open")
			}
			t.Logf("stuck reader: connection ended (%v)", err)
			break
		}
		if f.Header.OpCode == ws.OpClose {
			code, reason := ws.ParseCloseFrameData(f.Payload)
			if code != ws.StatusPolicyViolation || !strings.Contains(reason, "too slow") {
				t.Fatalf("close %d %q", code, reason)
			}
			t.Logf("stuck reader: closed with %d %q", code, reason)
			break
		}
	}
}
