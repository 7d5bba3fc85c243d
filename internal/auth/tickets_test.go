package auth

import (
	"encoding/base64"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestTickets(t *testing.T) {
	const ttl = 30 * time.Second
	tests := []struct {
		name   string
		act    func(tk *Tickets, clock *fakeClock, ticket string) string // returns what to redeem
		wantOK bool
	}{
		{"fresh", func(_ *Tickets, _ *fakeClock, tt string) string { return tt }, true},
		{"just before expiry", func(_ *Tickets, c *fakeClock, tt string) string { c.Advance(ttl - time.Nanosecond); return tt }, true},
		{"at expiry", func(_ *Tickets, c *fakeClock, tt string) string { c.Advance(ttl); return tt }, false},
		{"long expired", func(_ *Tickets, c *fakeClock, tt string) string { c.Advance(time.Hour); return tt }, false},
		{"second redeem", func(tk *Tickets, _ *fakeClock, tt string) string { tk.Redeem(tt); return tt }, false},
		{"unknown", func(*Tickets, *fakeClock, string) string { return "bm90LWEtdGlja2V0" }, false},
		{"empty", func(*Tickets, *fakeClock, string) string { return "" }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock(testEpoch)
			tk := NewTickets(ttl, clock.Now)
			ticket, err := tk.Issue("user-1", "dev-1")
			if err != nil {
				t.Fatal(err)
			}
			if raw, err := base64.RawURLEncoding.DecodeString(ticket); err != nil || len(raw) != 32 {
				t.Errorf("ticket %q is not 32 bytes of unpadded base64url", ticket)
			}
			u, d, ok := tk.Redeem(tt.act(tk, clock, ticket))
			if ok != tt.wantOK {
				t.Fatalf("Redeem ok = %v, want %v", ok, tt.wantOK)
			}
			if ok && (u != "user-1" || d != "dev-1") {
				t.Errorf("Redeem = %q, %q; want user-1, dev-1", u, d)
			}
			if !ok && (u != "" || d != "") {
				t.Errorf("failed Redeem returned %q, %q", u, d)
			}
		})
	}
}

func TestTicketsDefaultTTL(t *testing.T) {
	clock := newFakeClock(testEpoch)
	tk := NewTickets(0, clock.Now)
	a, _ := tk.Issue("u", "d")
	b, _ := tk.Issue("u", "d")
	clock.Advance(DefaultTicketTTL - time.Second)
	if _, _, ok := tk.Redeem(a); !ok {
		t.Error("ticket expired before the default TTL")
	}
	clock.Advance(time.Second)
	if _, _, ok := tk.Redeem(b); ok {
		t.Error("ticket still valid after the default TTL")
	}
}

// TestTicketRedeemedOnce: of many concurrent redeems of one ticket, exactly one succeeds.
func TestTicketRedeemedOnce(t *testing.T) {
	tk := NewTickets(time.Minute, nil)
	for range 50 {
		ticket, err := tk.Issue("u", "d")
		if err != nil {
			t.Fatal(err)
		}
		var wins atomic.Int32
		var wg sync.WaitGroup
		start := make(chan struct{})
		for range 32 {
			wg.Go(func() {
				<-start
				if _, _, ok := tk.Redeem(ticket); ok {
					wins.Add(1)
				}
			})
		}
		close(start)
		wg.Wait()
		if n := wins.Load(); n != 1 {
			t.Fatalf("%d concurrent redeems succeeded, want exactly 1", n)
		}
	}
}

// TestTicketsSweep: expired tickets, redeemed or not, are dropped by later Issues, a bounded
// number per call, with no goroutine.
func TestTicketsSweep(t *testing.T) {
	clock := newFakeClock(testEpoch)
	tk := NewTickets(time.Second, clock.Now)
	for i := range 1000 {
		ticket, err := tk.Issue("u", "d")
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			tk.Redeem(ticket) // leaves the queue entry until it expires
		}
	}
	if m, q := tk.outstanding(); m != 500 || q != 1000 {
		t.Fatalf("before expiry: %d in map, %d queued; want 500, 1000", m, q)
	}
	clock.Advance(2 * time.Second)
	// One Issue examines at most sweepBatch old tickets.
	tk.Issue("u", "d")
	if _, q := tk.outstanding(); q != 1000-sweepBatch+1 {
		t.Errorf("after one Issue: %d queued, want %d", q, 1000-sweepBatch+1)
	}
	for range 1000/sweepBatch + 1 {
		tk.Issue("u", "d")
	}
	m, q := tk.outstanding()
	fresh := 1000/sweepBatch + 2
	if m != fresh || q != fresh {
		t.Errorf("after the backlog is swept: %d in map, %d queued; want %d, %d", m, q, fresh, fresh)
	}
}
