package server

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws/wsutil"
	"github.com/google/uuid"

	"github.com/parley-chat/parley/internal/store/postgres/pgtest"
	"github.com/parley-chat/parley/protocol"
)

// startNATS runs a nats-server of the test's own on a free loopback port and returns its
// URL; it is killed when the test ends. Skips (fails in CI) without the binary.
func startNATS(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("nats-server")
	if err != nil {
		if os.Getenv("PARLEY_TEST_REQUIRE_SERVICES") == "1" {
			t.Fatalf("nats-server not installed and PARLEY_TEST_REQUIRE_SERVICES=1: %v", err)
		}
		t.Skipf("skipping: nats-server not installed: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.Command(bin, "-a", "127.0.0.1", "-p", strconv.Itoa(port), "-js", "-sd", t.TempDir())
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addr := "127.0.0.1:" + strconv.Itoa(port)
	for deadline := time.Now().Add(10 * time.Second); ; {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("nats-server did not listen on %s", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return "nats://" + addr
}

// TestTwoNodesOneDatabase: two `parley serve` processes on one PostgreSQL database and one
// NATS, each with its own sequencer, the clients of every group split between them, all
// sending into the same groups at once. Every acked message is stored once, at a gapless
// seq, with the seq its ack gave, and delivered exactly once to every member's device on
// either node. PARLEY_TEST_TWO_NODES_FOR sets how long the clients send (default 3s; the
// run recorded in docs/benchmarks.md used 30s).
func TestTwoNodesOneDatabase(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	dur := 3 * time.Second
	if v := os.Getenv("PARLEY_TEST_TWO_NODES_FOR"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatal(err)
		}
		dur = d
	}
	bin := buildParley(t)
	args := []string{"--postgres-url", pgtest.URL(t), "--nats-url", startNATS(t)}
	dataA, dataB := t.TempDir(), t.TempDir()
	a, _ := startProcess(t, bin, dataA, args...)
	// Every node accepts every node's tokens: they share the signing key.
	key, err := os.ReadFile(filepath.Join(dataA, "auth.key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dataB, "auth.key"), key, 0o600); err != nil {
		t.Fatal(err)
	}
	b, _ := startProcess(t, bin, dataB, args...)
	nodes := []*testServer{a, b}

	const groups, members = 20, 4
	type device struct {
		user string
		conn *rawWS
	}
	var devices []device
	var groupIDs []string
	memberOf := map[string][]string{} // group → user ids
	for g := range groups {
		var accs []account
		for m := range members {
			accs = append(accs, a.signup(fmt.Sprintf("g%du%d", g, m)))
		}
		c := a.group(accs[0], fmt.Sprintf("g%d", g), accs[1:]...)
		groupIDs = append(groupIDs, c.ID)
		for m, acc := range accs {
			memberOf[c.ID] = append(memberOf[c.ID], acc.UserID)
			node := nodes[m%2] // half of each group on each node
			devices = append(devices, device{user: acc.UserID, conn: node.dialRaw(node.login(acc.Username).AccessToken)})
		}
	}

	type key2 struct{ conv, id string }
	var mu sync.Mutex
	ackedSeq := map[key2]int64{}     // (conv, id) → seq its ack gave
	got := map[string]map[key2]int{} // device → deliveries
	sentBy := map[key2]string{}      // → sender user
	stop := time.Now().Add(dur)
	var sent atomic.Int64
	var wg sync.WaitGroup
	for i := range devices { // before any reader starts: they read the map
		got[strconv.Itoa(i)] = map[key2]int{}
	}
	for i, d := range devices {
		conv := groupIDs[i/members]
		wg.Go(func() {
			pending := ""
			for {
				if pending == "" && time.Now().Before(stop) {
					pending = uuid.NewString()
					mu.Lock()
					sentBy[key2{conv, pending}] = d.user
					mu.Unlock()
					body, _ := json.Marshal(protocol.ClientFrame{Type: protocol.FrameSend, ID: pending, ConversationID: conv, Body: "x"})
					if err := wsutil.WriteClientText(d.conn.nc, body); err != nil {
						t.Errorf("device %d: %v", i, err)
						return
					}
					sent.Add(1)
				}
				f, err := d.conn.tryRead(3 * time.Second)
				if err != nil {
					if pending == "" && time.Now().After(stop) {
						return // quiet for 3 s after the end: everything arrived
					}
					t.Errorf("device %d: %v (pending %q)", i, err, pending)
					return
				}
				switch f.Type {
				case protocol.FrameAck:
					mu.Lock()
					ackedSeq[key2{f.ConversationID, f.ID}] = f.Seq
					mu.Unlock()
					if f.ID == pending {
						pending = ""
					}
				case protocol.FrameMessage:
					mu.Lock()
					got[strconv.Itoa(i)][key2{f.ConversationID, f.ID}]++
					mu.Unlock()
				case protocol.FrameError:
					t.Errorf("device %d: error frame %s: %s", i, f.Code, f.ErrMessage)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}

	// The log: gapless, each id once, each acked one at its acked seq.
	for g, conv := range groupIDs {
		hist := b.history(b.login(fmt.Sprintf("g%du0", g)), conv, 0)
		seen := map[string]bool{}
		for i, m := range hist {
			if m.Seq != int64(i+1) {
				t.Fatalf("%s: event %d has seq %d: a gap", conv, i, m.Seq)
			}
			if m.Kind != protocol.KindText {
				continue
			}
			if seen[m.ID] {
				t.Fatalf("%s: %s stored twice", conv, m.ID)
			}
			seen[m.ID] = true
			if s, ok := ackedSeq[key2{conv, m.ID}]; !ok || s != m.Seq {
				t.Fatalf("%s: %s stored at %d, acked at %d (%v)", conv, m.ID, m.Seq, s, ok)
			}
		}
	}
	// Delivery: every acked message exactly once on every member's device, other than the
	// sender's own (which has its ack).
	for i, d := range devices {
		conv := groupIDs[i/members]
		for k, seq := range ackedSeq {
			if k.conv != conv || sentBy[k] == d.user {
				continue
			}
			if n := got[strconv.Itoa(i)][k]; n != 1 {
				t.Fatalf("device %d (%s): message %s (seq %d) delivered %d times, want 1", i, d.user, k.id, seq, n)
			}
		}
	}
	t.Logf("%d messages sent and acked through two nodes in %v into %d groups, each delivered once to %d devices",
		len(ackedSeq), dur, groups, members-1)
}
