package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/parley-chat/parley/protocol"
)

// smallDisk mounts a tmpfs of size bytes and returns its path; it is unmounted when the test
// ends. Mounting takes root: elsewhere the test skips, unless PARLEY_TEST_REQUIRE_SERVICES=1
// (CI), where it fails.
func smallDisk(t *testing.T, size int) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "disk")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", size), "tmpfs", dir).CombinedOutput()
	if err != nil {
		msg := fmt.Sprintf("cannot mount a small tmpfs to fill (needs root): %v %s", err, out)
		if os.Getenv("PARLEY_TEST_REQUIRE_SERVICES") == "1" {
			t.Fatal(msg)
		}
		t.Skip("skipping: " + msg)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", dir, err, out)
		}
	})
	return dir
}

// fill writes a file in dir until the file system is full; removing it frees the space.
func fill(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "filler")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill: %v", err)
			}
			break
		}
	}
	for _, n := range []int{4096, 512, 1} { // the last few bytes too
		b := make([]byte, n)
		for {
			if _, err := f.Write(b); err != nil {
				break
			}
		}
	}
	return p
}

// TestDiskFull: with the disk full, every send is answered unavailable (never an ack for what
// was not stored, never "internal"), /readyz says not ready, and the failure is logged once,
// not per send. With room again, readiness returns by itself, the same sends go through
// (once each), and history holds exactly what was acked.
func TestDiskFull(t *testing.T) {
	disk := smallDisk(t, 48<<20)
	var logMu sync.Mutex
	var logged []string
	ts := startServerLogging(t, func(c *Config) {
		c.Data = disk
		c.SQLite.WALRestartBytes = 256 << 10
	}, func(h slog.Handler) slog.Handler { return logRecorder{&logMu, &logged, h} })
	alice, bob := ts.signup("alice"), ts.signup("bob")
	g := ts.group(alice, "g", bob)
	c := ts.dialRaw(alice.AccessToken)
	body := strings.Repeat("x", 4000)

	filler := fill(t, disk)
	acked := map[string]int64{}
	var refused []string
	for i := 0; len(refused) < 200; i++ {
		if i > 20000 {
			t.Fatalf("%d sends on a full disk, none refused", i)
		}
		id := uuid.NewString()
		c.send(protocol.ClientFrame{Type: "send", ID: id, ConversationID: g.ID, Body: body})
		f := c.read()
		switch {
		case f.Type == protocol.FrameAck:
			acked[id] = f.Seq // room left in the WAL's pages: stored, and acked
		case f.Type == protocol.FrameError && f.Code == protocol.CodeUnavailable:
			refused = append(refused, id)
		default:
			t.Fatalf("send on a full disk: %+v, want an ack or unavailable", f)
		}
	}
	resp, err := http.Get(ts.base + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Fatalf("/readyz with the disk full: %d, want 503", resp.StatusCode)
	}
	var eb protocol.ErrorBody
	if code := ts.call("POST", "/api/v1/conversations", alice.AccessToken, protocol.CreateConversationRequest{Type: protocol.Group, Name: "more", MemberIDs: []string{bob.UserID}}, &eb); code != 503 || eb.Error.Code != protocol.CodeUnavailable {
		t.Fatalf("a REST write with the disk full: %d %+v, want 503 unavailable", code, eb)
	}
	logMu.Lock()
	n := len(logged)
	logMu.Unlock()
	if n != 1 {
		t.Fatalf("%d error lines for %d refused sends, want 1 (about the store): %q", n, len(refused), logged)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(ts.base + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz still %d 10 s after the disk has room", resp.StatusCode)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, id := range refused { // a client's retries, with the same ids
		c.send(protocol.ClientFrame{Type: "send", ID: id, ConversationID: g.ID, Body: body})
		if f := c.readType(protocol.FrameAck); f.ID != id {
			t.Fatalf("retry of %s: ack for %s", id, f.ID)
		} else {
			acked[id] = f.Seq
		}
	}
	stored := map[string]int64{}
	for _, m := range ts.history(bob, g.ID, 0) {
		if m.Kind == protocol.KindText {
			if _, dup := stored[m.ID]; dup {
				t.Fatalf("message %s stored twice", m.ID)
			}
			stored[m.ID] = m.Seq
		}
	}
	if len(stored) != len(acked) {
		t.Fatalf("history holds %d messages, %d were acked", len(stored), len(acked))
	}
	for id, seq := range acked {
		if stored[id] != seq {
			t.Fatalf("acked %s at seq %d, history has it at %d", id, seq, stored[id])
		}
	}
}

// logRecorder passes records on and keeps the messages of error records about the store.
type logRecorder struct {
	mu   *sync.Mutex
	msgs *[]string
	next slog.Handler
}

func (h logRecorder) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelError || h.next.Enabled(ctx, l)
}

func (h logRecorder) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelError {
		h.mu.Lock()
		*h.msgs = append(*h.msgs, r.Message)
		h.mu.Unlock()
	}
	if h.next.Enabled(ctx, r.Level) {
		return h.next.Handle(ctx, r)
	}
	return nil
}

func (h logRecorder) WithAttrs(as []slog.Attr) slog.Handler {
	return logRecorder{h.mu, h.msgs, h.next.WithAttrs(as)}
}

func (h logRecorder) WithGroup(name string) slog.Handler {
	return logRecorder{h.mu, h.msgs, h.next.WithGroup(name)}
}
