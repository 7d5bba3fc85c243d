package loadgen

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// IdleConfig is the "idle" scenario: Conns authenticated connections spread over Users
// accounts, held open and heartbeating, while the server's memory is read.
type IdleConfig struct {
	URL       string
	Conns     int
	Users     int
	Hold      time.Duration // how long to hold them after the last one connected
	ServerPID int           // read RSS from /proc/<pid>; 0 = not measured
	Prefix    string
	// SourceIPs to dial from, round-robin (e.g. 127.0.0.2..9), so that more connections than
	// one address's ephemeral ports can be held. Empty: the system's choice.
	SourceIPs []string
}

// IdleResult is what an idle run measured.
type IdleResult struct {
	Scenario          string  `json:"scenario"`
	Conns             int     `json:"conns"`
	ServerRSSBeforeKB int64   `json:"server_rss_before_kib"`
	ServerRSSAfterKB  int64   `json:"server_rss_after_kib"`
	ServerKBPerConn   float64 `json:"server_kib_per_conn"`
	ClientRSSKB       int64   `json:"client_rss_kib"`
	ConnectS          float64 `json:"connect_s"`
}

func (r IdleResult) String() string {
	return fmt.Sprintf(`idle: %d connections (connected in %.1fs)
  server RSS %d KiB → %d KiB: %.2f KiB per connection
  client RSS %d KiB`, r.Conns, r.ConnectS, r.ServerRSSBeforeKB, r.ServerRSSAfterKB, r.ServerKBPerConn, r.ClientRSSKB)
}

// Idle runs the idle scenario. Connections are raw WebSockets (not the SDK) so that the
// load generator itself stays small; one goroutine heartbeats them all.
func Idle(ctx context.Context, cfg IdleConfig) (IdleResult, error) {
	if cfg.Conns <= 0 || cfg.Users <= 0 {
		return IdleResult{}, errors.New("idle: conns and users must be positive")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "i" + strconv.FormatInt(time.Now().UnixNano()%1e8, 36)
	}
	users, err := Accounts(ctx, cfg.URL, cfg.Prefix, cfg.Users)
	if err != nil {
		return IdleResult{}, err
	}
	res := IdleResult{Scenario: "idle", Conns: cfg.Conns}
	// Let the server settle after account creation: its sweeper returns free heap to the
	// OS every half heartbeat (5 s by default).
	time.Sleep(7 * time.Second)
	res.ServerRSSBeforeKB = rssKiB(cfg.ServerPID)

	wsURL := "ws" + strings.TrimPrefix(cfg.URL, "http") + "/api/v1/ws"
	conns := make([]net.Conn, cfg.Conns)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	start := time.Now()
	var wg sync.WaitGroup
	errc := make(chan error, 1)
	sem := make(chan struct{}, 64)
	for i := range conns {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			d := ws.Dialer{
				Timeout: 10 * time.Second,
				Header:  ws.HandshakeHeaderHTTP(http.Header{"Authorization": {"Bearer " + users[i%len(users)].Tokens().AccessToken}}),
			}
			if len(cfg.SourceIPs) > 0 {
				local := &net.TCPAddr{IP: net.ParseIP(cfg.SourceIPs[i%len(cfg.SourceIPs)])}
				d.NetDial = (&net.Dialer{LocalAddr: local, Timeout: 10 * time.Second}).DialContext
			}
			c, br, _, err := d.Dial(ctx, wsURL)
			if err != nil {
				select {
				case errc <- fmt.Errorf("connection %d: %w", i, err):
				default:
				}
				return
			}
			if br != nil {
				ws.PutReader(br) // the ready frame; nothing else is read while idle
			}
			conns[i] = c
		})
	}
	wg.Wait()
	select {
	case err := <-errc:
		return res, err
	default:
	}
	res.ConnectS = time.Since(start).Seconds()

	// Heartbeat every connection, as an idle client would, and discard what comes back.
	ping := []byte(`{"type":"ping"}`)
	deadline := time.Now().Add(cfg.Hold)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		for _, c := range conns {
			_ = c.SetWriteDeadline(time.Now().Add(time.Second))
			_ = wsutil.WriteClientText(c, ping)
			_ = c.SetReadDeadline(time.Now().Add(time.Millisecond))
			var buf [256]byte
			for {
				if _, err := c.Read(buf[:]); err != nil {
					break
				}
			}
		}
		time.Sleep(min(5*time.Second, time.Until(deadline)))
	}
	res.ServerRSSAfterKB = rssKiB(cfg.ServerPID)
	res.ClientRSSKB = rssKiB(os.Getpid())
	res.ServerKBPerConn = float64(res.ServerRSSAfterKB-res.ServerRSSBeforeKB) / float64(cfg.Conns)
	return res, nil
}

// rssKiB reads a process's resident set size from /proc, or 0.
func rssKiB(pid int) int64 {
	if pid <= 0 {
		return 0
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}
