package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws/wsutil"
	"github.com/google/uuid"

	"github.com/parley-chat/parley/internal/loadgen"
	"github.com/parley-chat/parley/internal/store/postgres/pgtest"
	"github.com/parley-chat/parley/protocol"
)

var build struct {
	once sync.Once
	dir  string
	bin  string
	err  error
}

// buildParley compiles the real binary, once for the whole package's tests.
func buildParley(t *testing.T) string {
	t.Helper()
	build.once.Do(func() {
		build.dir, build.err = os.MkdirTemp("", "parley-test-bin-")
		if build.err != nil {
			return
		}
		build.bin = filepath.Join(build.dir, "parley")
		cmd := exec.Command("go", "build", "-o", build.bin, "github.com/parley-chat/parley/cmd/parley")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			build.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if build.err != nil {
		t.Fatal(build.err)
	}
	return build.bin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if build.dir != "" {
		os.RemoveAll(build.dir)
	}
	os.Exit(code)
}

// startProcess runs `parley serve` on data, with args after its own, and returns a handle
// once it is ready.
func startProcess(t *testing.T, bin, data string, args ...string) (*testServer, *loadgen.Server) {
	t.Helper()
	// Limits raised as testLimits does: the test plays many users from one address.
	base := []string{"--argon2-memory-kib", "64", "--argon2-time", "1"}
	for _, l := range []string{"send", "receipt", "membership", "signup-ip", "login-ip", "login-account-ip", "login-account", "refresh-ip"} {
		base = append(base, "--limit", l+"=100000/s:100000")
	}
	p, err := loadgen.StartServer(context.Background(), bin, data, append(base, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Kill)
	return &testServer{t: t, addr: p.Addr, base: p.URL, stop: func() {}}, p
}

// TestCrashKeepsAckedMessages kills the server with SIGKILL while clients are sending and
// starts it again on the same data: every acknowledged message is in history with the seq
// its ack gave, the seqs are gapless, and resending the unacknowledged ones (same ids)
// creates each at most once. Once with the defaults, and once with the WAL checkpointed and
// restarted all the time, so that the kill finds it anywhere in its cycle: acked messages
// in its frames, in the database, or both.
func TestCrashKeepsAckedMessages(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	for _, tc := range []struct {
		name     string
		args     func(t *testing.T) []string
		restarts int64 // WAL restarts to see before the kill
	}{
		{"defaults", func(*testing.T) []string { return nil }, 0},
		{"WAL restarting", func(*testing.T) []string {
			return []string{"--sqlite-wal-restart-bytes", "65536", "--sqlite-checkpoint-interval", "2ms",
				"--debug-listen", "127.0.0.1:0"}
		}, 5},
		{"postgres", func(t *testing.T) []string { return []string{"--postgres-url", pgtest.URL(t)} }, 0},
	} {
		t.Run(tc.name, func(t *testing.T) { testCrashKeepsAckedMessages(t, tc.args(t), tc.restarts) })
	}
}

// walRestarts asks the server's debug listener how often its WAL has restarted.
func walRestarts(t *testing.T, debugURL string) int64 {
	t.Helper()
	resp, err := http.Get(debugURL + "/debug/parley")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Store struct{ Restarts int64 } `json:"store"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	return body.Store.Restarts
}

func testCrashKeepsAckedMessages(t *testing.T, args []string, restarts int64) {
	bin := buildParley(t)
	data := t.TempDir()
	ts, proc := startProcess(t, bin, data, args...)
	alice, bob := ts.signup("alice"), ts.signup("bob")
	convs := []string{ts.direct(alice, bob).ID, ts.group(alice, "crash", bob).ID}

	type sent struct {
		conv  string
		byBob bool  // dedupe is per sender: a retry must come from the same user
		seq   int64 // 0 until acked
	}
	var mu sync.Mutex
	ids := map[string]*sent{}
	var acked atomic.Int64

	conns := make([]*rawWS, 16)
	for i := range conns {
		who := alice
		if i%2 == 1 {
			who = bob
		}
		conns[i] = ts.dialRaw(who.AccessToken)
	}
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Go(func() {
			for n := 0; ; n++ {
				id, conv := uuid.NewString(), convs[(i+n)%2]
				mu.Lock()
				ids[id] = &sent{conv: conv, byBob: i%2 == 1}
				mu.Unlock()
				b, _ := json.Marshal(protocol.ClientFrame{Type: "send", ID: id, ConversationID: conv, Body: fmt.Sprintf("c%d m%d", i, n)})
				if wsutil.WriteClientText(c.nc, b) != nil {
					return
				}
				for {
					f, err := c.tryRead(10 * time.Second)
					if err != nil {
						return
					}
					if f.Type == protocol.FrameAck && f.ID == id {
						mu.Lock()
						ids[id].seq = f.Seq
						mu.Unlock()
						acked.Add(1)
						break
					}
				}
			}
		})
	}
	deadline := time.Now().Add(time.Minute)
	for acked.Load() < 400 || restarts > 0 && walRestarts(t, proc.DebugURL) < restarts {
		if time.Now().After(deadline) {
			t.Fatalf("%d acked in a minute, and not %d WAL restarts", acked.Load(), restarts)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if restarts > 0 {
		t.Logf("the WAL restarted %d times before the kill", walRestarts(t, proc.DebugURL))
	}
	proc.Kill() // SIGKILL
	wg.Wait()

	ts2, _ := startProcess(t, bin, data, args...)
	alice = ts2.login("alice")
	stored := map[string]protocol.Message{}
	for _, conv := range convs {
		hist := ts2.history(alice, conv, 0)
		for i, m := range hist {
			if m.Seq != int64(i+1) {
				t.Fatalf("conversation %s: event %d has seq %d: a gap", conv, i, m.Seq)
			}
			if _, dup := stored[m.ID]; dup && m.Kind == protocol.KindText {
				t.Fatalf("id %s stored twice", m.ID)
			}
			stored[m.ID] = m
		}
	}
	nAcked := 0
	var unacked []string
	for id, s := range ids {
		if s.seq == 0 {
			unacked = append(unacked, id)
			continue
		}
		nAcked++
		m, ok := stored[id]
		if !ok {
			t.Fatalf("acked message %s (seq %d) lost in the crash", id, s.seq)
		}
		if m.Seq != s.seq || m.ConversationID != s.conv {
			t.Fatalf("acked message %s: ack said %s/%d, history says %s/%d", id, s.conv, s.seq, m.ConversationID, m.Seq)
		}
	}
	t.Logf("%d acked before SIGKILL, all found; %d in flight", nAcked, len(unacked))

	// The client's retry after the crash: same ids. Each is stored once, whether or not it
	// made it to disk before the kill.
	retry := map[bool]*rawWS{false: ts2.dialRaw(alice.AccessToken), true: ts2.dialRaw(ts2.login("bob").AccessToken)}
	for _, id := range unacked {
		s := ids[id]
		c := retry[s.byBob]
		c.send(protocol.ClientFrame{Type: "send", ID: id, ConversationID: s.conv, Body: "retry"})
		ack := c.readType(protocol.FrameAck)
		if prev, ok := stored[id]; ok && prev.Seq != ack.Seq {
			t.Fatalf("retry of %s stored before the crash at %d got a new seq %d", id, prev.Seq, ack.Seq)
		}
	}
	total := 0
	for _, conv := range convs {
		hist := ts2.history(alice, conv, 0)
		for i, m := range hist {
			if m.Seq != int64(i+1) {
				t.Fatalf("after retries: gap at %d", i)
			}
			if m.Kind == protocol.KindText {
				total++
			}
		}
	}
	if total != len(ids) {
		t.Fatalf("%d text messages stored for %d distinct ids", total, len(ids))
	}
}
