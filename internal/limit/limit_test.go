package limit_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/parley-chat/parley/internal/limit"
	"github.com/parley-chat/parley/internal/state/memstate"
)

func TestClientAddr(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	tests := []struct {
		name, peer string
		xff        []string
		trusted    []netip.Prefix
		want       string
	}{
		{"plain peer", "192.0.2.7:5000", nil, nil, "192.0.2.7"},
		{"header ignored without trusted proxies", "192.0.2.7:5000", []string{"203.0.113.1"}, nil, "192.0.2.7"},
		{"header ignored from an untrusted peer", "192.0.2.7:5000", []string{"203.0.113.1"}, trusted, "192.0.2.7"},
		{"trusted proxy", "10.1.2.3:5000", []string{"203.0.113.1"}, trusted, "203.0.113.1"},
		{"client-written entries on the left are not believed", "10.1.2.3:5000", []string{"198.51.100.9, 203.0.113.1"}, trusted, "203.0.113.1"},
		{"a chain of trusted proxies", "10.1.2.3:5000", []string{"203.0.113.1, 10.9.9.9"}, trusted, "203.0.113.1"},
		{"several header lines", "10.1.2.3:5000", []string{"198.51.100.9", "203.0.113.1"}, trusted, "203.0.113.1"},
		{"garbage hop stops the walk", "10.1.2.3:5000", []string{"203.0.113.1, junk"}, trusted, "10.1.2.3"},
		{"IPv6 keyed by its /64", "[2001:db8:1:2:3:4:5:6]:443", nil, nil, "2001:db8:1:2::/64"},
		{"IPv4-mapped IPv6 is IPv4", "[::ffff:192.0.2.7]:443", nil, nil, "192.0.2.7"},
		{"trusted IPv6 proxy", "[::1]:443", []string{"2001:db8::1"}, trusted, "2001:db8::/64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &http.Request{RemoteAddr: tt.peer, Header: http.Header{}}
			for _, h := range tt.xff {
				r.Header.Add("X-Forwarded-For", h)
			}
			if got := limit.ClientAddr(r, tt.trusted); got != tt.want {
				t.Fatalf("ClientAddr = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestConfigSet(t *testing.T) {
	tests := []struct {
		spec  string
		ok    bool
		get   func(limit.Config) limit.Rule
		rate  float64
		burst int
	}{
		{"send=20/s:200", true, func(c limit.Config) limit.Rule { return c.Send }, 20, 200},
		{"signup-ip=36/h:30", true, func(c limit.Config) limit.Rule { return c.SignupIP }, 0.01, 30},
		{"login-ip=30/m:5", true, func(c limit.Config) limit.Rule { return c.LoginIP }, 0.5, 5},
		{"send=20:200", false, nil, 0, 0},
		{"send=0/s:1", false, nil, 0, 0},
		{"send=1/s:0", false, nil, 0, 0},
		{"send=1/d:1", false, nil, 0, 0},
		{"nosuch=1/s:1", false, nil, 0, 0},
		{"send", false, nil, 0, 0},
	}
	for _, tt := range tests {
		var c limit.Config
		err := c.Set(tt.spec)
		if (err == nil) != tt.ok {
			t.Errorf("Set(%q) = %v, want ok=%v", tt.spec, err, tt.ok)
			continue
		}
		if tt.ok {
			if r := tt.get(c); r.Burst != tt.burst || r.Rate < tt.rate*0.999 || r.Rate > tt.rate*1.001 {
				t.Errorf("Set(%q) gave %+v, want rate %v burst %d", tt.spec, r, tt.rate, tt.burst)
			}
		} else if !strings.Contains(err.Error(), "RATE/UNIT:BURST") {
			t.Errorf("Set(%q) error %q does not say the format", tt.spec, err)
		}
	}
}

// TestKeyIsHashed: a subject of any size becomes a key of one size, and the limit holds.
func TestKeyIsHashed(t *testing.T) {
	if a, b := limit.HashKey(strings.Repeat("x", 1<<20)), limit.HashKey("x"); len(a) != 22 || len(b) != 22 || a == b {
		t.Fatalf("HashKey lengths %d %d (equal %v), want 22 each and different", len(a), len(b), a == b)
	}
	soft := memstate.New()
	defer soft.Close()
	l := limit.New(limit.Config{}, soft, 0, slog.New(slog.DiscardHandler))
	rule := limit.Rule{Rate: 0.01, Burst: 2}
	ctx := context.Background()
	for i := range 3 {
		err := l.Key(ctx, "logins", rule, strings.Repeat("y", 100_000))
		var ex *limit.Exceeded
		if i < 2 && err != nil || i == 2 && (!errors.As(err, &ex) || ex.RetryAfter < time.Second) {
			t.Fatalf("attempt %d: %v", i, err)
		}
	}
}

// TestSoftStateDown: per-user limits let actions through when soft state fails (chat must
// not stop with Redis); limits on strangers refuse them (passwords matter more).
func TestSoftStateDown(t *testing.T) {
	soft := memstate.New()
	soft.Close()
	l := limit.New(limit.Config{}, soft, 0, slog.New(slog.DiscardHandler))
	rule := limit.Rule{Rate: 1, Burst: 1}
	if err := l.User(context.Background(), "messages", rule, "u1"); err != nil {
		t.Fatalf("User with soft state down: %v, want allowed", err)
	}
	if err := l.Key(context.Background(), "logins", rule, "alice"); !errors.Is(err, limit.ErrUnavailable) {
		t.Fatalf("Key with soft state down: %v, want ErrUnavailable", err)
	}
}

// FuzzClientAddr: whatever a peer writes in X-Forwarded-For, the client address is an
// address or an IPv6 /64 (never the header's text), and an untrusted peer's is ignored.
func FuzzClientAddr(f *testing.F) {
	f.Add("10.1.2.3:5000", "203.0.113.1, 10.0.0.1")
	f.Add("192.0.2.1:1", "::1")
	f.Add("[::1]:443", "junk, 2001:db8::1")
	f.Add("not an address", "")
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	f.Fuzz(func(t *testing.T, peer, xff string) {
		r := &http.Request{RemoteAddr: peer, Header: http.Header{"X-Forwarded-For": {xff}}}
		got := limit.ClientAddr(r, trusted)
		_, aerr := netip.ParseAddr(got)
		_, perr := netip.ParsePrefix(got)
		if aerr != nil && perr != nil && got != peer {
			t.Fatalf("ClientAddr(%q, %q) = %q: neither an address, a /64 nor the unparsable peer", peer, xff, got)
		}
		if p, err := netip.ParseAddrPort(peer); err == nil && !p.Addr().Unmap().IsLoopback() && !strings.HasPrefix(p.Addr().Unmap().String(), "10.") {
			if want := limit.ClientAddr(&http.Request{RemoteAddr: peer}, nil); got != want {
				t.Fatalf("untrusted peer %q: got %q, want its own %q", peer, got, want)
			}
		}
	})
}

// BenchmarkUser is what the per-user limit costs a message on the embedded server: one
// bucket in memory, taken under a mutex.
func BenchmarkUser(b *testing.B) {
	soft := memstate.New()
	defer soft.Close()
	l := limit.New(limit.Config{}, soft, 0, slog.New(slog.DiscardHandler))
	rule := limit.Rule{Rate: 1e9, Burst: 1e9}
	ctx := context.Background()
	users := []string{"0192f0a0-0000-7000-8000-000000000001", "0192f0a0-0000-7000-8000-000000000002"}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if err := l.User(ctx, "messages", rule, users[i&1]); err != nil {
			b.Fatal(err)
		}
	}
}
