package loadgen

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
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

	d := newDialer(cfg.URL, cfg.SourceIPs)
	conns := make([]*lconn, cfg.Conns)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.close()
			}
		}
	}()
	start := time.Now()
	if err := parallel(ctx, cfg.Conns, 64, func(i int) error {
		c, err := d.dial(ctx, users[i%len(users)].Tokens().AccessToken)
		if err != nil {
			return fmt.Errorf("connection %d: %w", i, err)
		}
		conns[i] = c
		return nil
	}); err != nil {
		return res, err
	}
	res.ConnectS = time.Since(start).Seconds()

	// Heartbeat every connection, as an idle client would, and discard what comes back.
	ping := []byte(`{"type":"ping"}`)
	deadline := time.Now().Add(cfg.Hold)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		for _, c := range conns {
			_ = c.nc.SetWriteDeadline(time.Now().Add(time.Second))
			_ = c.write(ping)
			// Discard the pongs (and the server's pings) without parsing: what an idle
			// client reads does not matter here.
			_ = c.nc.SetReadDeadline(time.Now().Add(time.Millisecond))
			var buf [256]byte
			for {
				if _, err := c.br.Read(buf[:]); err != nil {
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
