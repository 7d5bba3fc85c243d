package auth

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"sync"
	"time"
)

const (
	// DefaultTicketTTL is a WebSocket ticket's lifetime when NewTickets is given none: long
	// enough for a browser to open the socket right after asking, short enough that a ticket
	// leaked into a log is useless.
	DefaultTicketTTL = 30 * time.Second
	// maxTickets bounds the tickets issued within one TTL (about 150 bytes each), so that a
	// flood of requests cannot exhaust memory.
	maxTickets = 1 << 20
	// sweepBatch is how many of the oldest tickets Issue examines for expiry: more than the
	// one ticket it adds, so expired tickets are removed faster than new ones arrive, and
	// bounded, so no Issue pays for a backlog.
	sweepBatch = 16
	ticketLen  = 32 // random bytes
)

// ErrTooManyTickets is returned (wrapped) by Issue when too many tickets were issued within
// one TTL.
var ErrTooManyTickets = errors.New("too many outstanding WebSocket tickets")

// Tickets are one-time, short-lived WebSocket tickets, for browsers, which cannot set an
// Authorization header on a WebSocket: the client gets a ticket over authenticated HTTP and
// passes it as ?ticket= when it connects. They live in this process's memory only (a ticket
// must be redeemed on the node that issued it). Expired tickets are swept by Issue, a few at
// a time, with no goroutine. A Tickets is safe for concurrent use.
type Tickets struct {
	ttl time.Duration
	now func() time.Time

	mu      sync.Mutex
	byToken map[string]ticket
	// queue holds tickets in issue order, which is also expiry order (one TTL for all);
	// redeemed tickets stay in it until they expire, and are then skipped.
	queue []queued
	head  int
}

type ticket struct {
	userID, deviceID string
	expires          time.Time
}

type queued struct {
	token   string
	expires time.Time
}

// NewTickets returns Tickets valid for ttl (DefaultTicketTTL if ttl <= 0) that read the time
// from now (nil means time.Now).
func NewTickets(ttl time.Duration, now func() time.Time) *Tickets {
	if ttl <= 0 {
		ttl = DefaultTicketTTL
	}
	if now == nil {
		now = time.Now
	}
	return &Tickets{ttl: ttl, now: now, byToken: make(map[string]ticket)}
}

// Issue returns a new ticket for userID's device deviceID: 32 random bytes, unpadded
// base64url (safe in a query string).
func (t *Tickets) Issue(userID, deviceID string) (string, error) {
	b := make([]byte, ticketLen)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (it crashes the program instead)
	token := base64.RawURLEncoding.EncodeToString(b)
	now := t.now()

	t.mu.Lock()
	defer t.mu.Unlock()
	t.sweep(now, sweepBatch)
	if len(t.queue)-t.head >= maxTickets { // the queue also holds redeemed, unexpired tickets
		return "", fmt.Errorf("auth: issue ticket: %w (%d)", ErrTooManyTickets, maxTickets)
	}
	exp := now.Add(t.ttl)
	t.byToken[token] = ticket{userID: userID, deviceID: deviceID, expires: exp}
	t.queue = append(t.queue, queued{token: token, expires: exp})
	return token, nil
}

// Redeem consumes ticket and returns whom it was issued to. ok is false if the ticket is
// unknown, was already redeemed, or has expired; a ticket is consumed even if expired.
func (t *Tickets) Redeem(ticket string) (userID, deviceID string, ok bool) {
	now := t.now()
	t.mu.Lock()
	tk, found := t.byToken[ticket]
	if found {
		delete(t.byToken, ticket)
	}
	t.mu.Unlock()
	if !found || !now.Before(tk.expires) {
		return "", "", false
	}
	return tk.userID, tk.deviceID, true
}

// sweep removes up to max expired tickets from the front of the queue. t.mu is held.
func (t *Tickets) sweep(now time.Time, max int) {
	for range max {
		if t.head == len(t.queue) || now.Before(t.queue[t.head].expires) {
			break
		}
		delete(t.byToken, t.queue[t.head].token)
		t.queue[t.head] = queued{} // let the string be collected
		t.head++
	}
	// Reclaim the consumed front once it is at least half the slice.
	if t.head > 0 && t.head*2 >= len(t.queue) {
		n := copy(t.queue, t.queue[t.head:])
		clear(t.queue[n:])
		t.queue = t.queue[:n]
		t.head = 0
	}
}

// outstanding returns how many tickets are held (issued, not redeemed, not yet swept).
func (t *Tickets) outstanding() (inMap, inQueue int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.byToken), len(t.queue) - t.head
}
