package server

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws/wsutil"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/parley-chat/parley/protocol"
)

// ownPostgres is a PostgreSQL cluster of the test's own (initdb in a temp dir, a free
// loopback port), for tests that stop and start the database server itself.
type ownPostgres struct {
	t        *testing.T
	bin, dir string
	port     int
}

// startOwnPostgres makes and starts a cluster. It needs PostgreSQL 15's binaries and, as
// root, the postgres user (initdb refuses to run as root); it skips without them, unless
// PARLEY_TEST_REQUIRE_SERVICES=1.
func startOwnPostgres(t *testing.T) *ownPostgres {
	t.Helper()
	skip := func(why string) {
		if os.Getenv("PARLEY_TEST_REQUIRE_SERVICES") == "1" {
			t.Fatalf("cannot run a PostgreSQL of the test's own and PARLEY_TEST_REQUIRE_SERVICES=1: %s", why)
		}
		t.Skipf("skipping: cannot run a PostgreSQL of the test's own: %s", why)
	}
	bin := "/usr/lib/postgresql/15/bin"
	if _, err := os.Stat(filepath.Join(bin, "initdb")); err != nil {
		skip(err.Error())
	}
	dir, err := os.MkdirTemp("", "parley-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := &ownPostgres{t: t, bin: bin, dir: dir}
	if os.Geteuid() == 0 {
		if err := exec.Command("chown", "postgres", dir).Run(); err != nil {
			skip("chown to postgres: " + err.Error())
		}
	}
	if out, err := p.cmd("initdb", "-D", filepath.Join(dir, "data"), "-A", "trust", "-U", "postgres").CombinedOutput(); err != nil {
		skip("initdb: " + err.Error() + ": " + string(out))
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.port = ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	p.start()
	t.Cleanup(func() { _ = p.cmd("pg_ctl", "-D", filepath.Join(dir, "data"), "-m", "immediate", "-w", "stop").Run() })
	return p
}

// cmd runs a PostgreSQL binary, as the postgres user when the test runs as root.
func (p *ownPostgres) cmd(name string, args ...string) *exec.Cmd {
	path := filepath.Join(p.bin, name)
	if os.Geteuid() == 0 {
		return exec.Command("runuser", append([]string{"-u", "postgres", "--", path}, args...)...)
	}
	return exec.Command(path, args...)
}

func (p *ownPostgres) start() {
	p.t.Helper()
	opts := "-p " + strconv.Itoa(p.port) + " -k " + p.dir + " -c listen_addresses=127.0.0.1"
	if out, err := p.cmd("pg_ctl", "-D", filepath.Join(p.dir, "data"), "-o", opts, "-l", filepath.Join(p.dir, "log"), "-w", "start").CombinedOutput(); err != nil {
		p.t.Fatalf("pg_ctl start: %v: %s", err, out)
	}
}

// crash stops the server the way a crash does (immediate: no shutdown checkpoint).
func (p *ownPostgres) crash() {
	p.t.Helper()
	if out, err := p.cmd("pg_ctl", "-D", filepath.Join(p.dir, "data"), "-m", "immediate", "-w", "stop").CombinedOutput(); err != nil {
		p.t.Fatalf("pg_ctl stop: %v: %s", err, out)
	}
}

// database creates a database and returns its URL.
func (p *ownPostgres) database(name string) string {
	p.t.Helper()
	base := "postgres://postgres@127.0.0.1:" + strconv.Itoa(p.port)
	c, err := pgx.Connect(context.Background(), base+"/postgres")
	if err != nil {
		p.t.Fatal(err)
	}
	defer c.Close(context.Background())
	if _, err := c.Exec(context.Background(), "CREATE DATABASE "+name); err != nil {
		p.t.Fatal(err)
	}
	return base + "/" + name
}

// TestPostgresRestartDuringSends crashes the database under a sending client and starts it
// again: while it is down every send is answered with an "unavailable" error frame (never an
// ack), the server and the connection stay up, and once it is back sends are acked again.
// Every acked message is in history at the seq its ack gave.
func TestPostgresRestartDuringSends(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	pg := startOwnPostgres(t)
	bin := buildParley(t)
	ts, proc := startProcess(t, bin, t.TempDir(), "--postgres-url", pg.database("parley"))
	alice, bob := ts.signup("alice"), ts.signup("bob")
	conv := ts.direct(alice, bob).ID
	c := ts.dialRaw(alice.AccessToken)

	acked := map[string]int64{}
	send := func() protocol.ServerFrame {
		t.Helper()
		id := uuid.NewString()
		b, _ := json.Marshal(protocol.ClientFrame{Type: protocol.FrameSend, ID: id, ConversationID: conv, Body: "x"})
		if err := wsutil.WriteClientText(c.nc, b); err != nil {
			t.Fatalf("write: %v", err)
		}
		for {
			f, err := c.tryRead(20 * time.Second)
			if err != nil {
				t.Fatalf("no answer to a send: %v", err)
			}
			if (f.Type == protocol.FrameAck || f.Type == protocol.FrameError) && f.ID == id {
				if f.Type == protocol.FrameAck {
					acked[id] = f.Seq
				}
				return f
			}
		}
	}
	for range 50 {
		if f := send(); f.Type != protocol.FrameAck {
			t.Fatalf("before the crash: %+v", f)
		}
	}
	pg.crash()
	for i := range 20 {
		f := send()
		if f.Type != protocol.FrameError || f.Code != protocol.CodeUnavailable {
			t.Fatalf("send %d with the database down: %+v, want an unavailable error", i, f)
		}
	}
	pg.start()
	deadline := time.Now().Add(30 * time.Second)
	for send().Type != protocol.FrameAck {
		if time.Now().After(deadline) {
			t.Fatal("sends not acked 30s after the database came back")
		}
		time.Sleep(100 * time.Millisecond)
	}
	for range 50 {
		if f := send(); f.Type != protocol.FrameAck {
			t.Fatalf("after the restart: %+v", f)
		}
	}
	if err := proc.Cmd.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("the server is gone: %v", err)
	}
	hist := ts.history(alice, conv, 0)
	stored := map[string]int64{}
	for i, m := range hist {
		if m.Seq != int64(i+1) {
			t.Fatalf("event %d has seq %d: a gap", i, m.Seq)
		}
		stored[m.ID] = m.Seq
	}
	for id, seq := range acked {
		if stored[id] != seq {
			t.Fatalf("acked %s at seq %d, stored at %d", id, seq, stored[id])
		}
	}
	t.Logf("%d acked, %d stored; every send with the database down answered unavailable", len(acked), len(hist))
}
