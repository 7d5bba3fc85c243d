// Package state defines Parley's soft state: what may be lost on a restart without losing a
// message, and must be shared between nodes when there are several. Presence (which devices
// have heartbeated recently, and when each user was last seen), rate limits, one-time tokens
// (WebSocket tickets) and throttles live here. The embedded implementation keeps it in
// memory; the scale-out one keeps it in Redis. package statetest checks both against every
// sentence below.
//
// Times are passed in (now, as Unix milliseconds) rather than read from a clock, so that
// behaviour over time is testable and every node of a cluster agrees on what "expired"
// means given its own clock.
package state

import (
	"context"
	"errors"
	"time"
)

// ErrClosed is returned by calls after Close.
var ErrClosed = errors.New("state closed")

// State is the soft-state store. All methods are safe for concurrent use.
type State interface {
	Presence
	Limits
	Tokens
	Close() error
}

// Presence tracks which devices of which users are online. A device is online while its
// last heartbeat is younger than the TTL given with it; a user is online while any of their
// devices is. A user's last-seen time is the time of the last heartbeat of any device, or
// the time a device explicitly went offline, whichever is later.
type Presence interface {
	// Heartbeat records that the device is alive at now, until now+ttl. cameOnline reports
	// whether the user was offline (no live device) before this call: a transition to
	// announce.
	Heartbeat(ctx context.Context, userID, deviceID string, now int64, ttl time.Duration) (cameOnline bool, err error)
	// Offline records that the device disconnected at now (it is no longer online).
	// wentOffline reports whether that left the user with no live device.
	Offline(ctx context.Context, userID, deviceID string, now int64) (wentOffline bool, err error)
	// Expire removes every device whose TTL ran out before now and returns the users that
	// this left with no live device (each once), with their last-seen time. Any node may
	// call it; a user is returned by at most one of concurrent callers.
	Expire(ctx context.Context, now int64) ([]UserPresence, error)
	// Lookup returns the presence of each user in ids (in the same order), as of now:
	// Online, and LastSeenTS (0 if the user was never seen).
	Lookup(ctx context.Context, ids []string, now int64) ([]UserPresence, error)
}

// UserPresence is one user's presence.
type UserPresence struct {
	UserID     string
	Online     bool
	LastSeenTS int64
}

// Limits are token buckets keyed by arbitrary strings ("login:alice", "typing:u:c").
type Limits interface {
	// Allow takes one token from the bucket key, which refills at rate tokens per second up
	// to burst. If none is left it returns ok=false and how long until one will be.
	// Buckets that have been full for a while may be forgotten.
	Allow(ctx context.Context, key string, rate float64, burst int, now int64) (ok bool, retryAfter time.Duration, err error)
}

// Tokens are values with an expiry: one-time WebSocket tickets (taken), and marks that are
// only looked at (an address a user logged in from).
type Tokens interface {
	// PutToken stores value under key until now+ttl. ErrExists if key is already stored
	// and not expired.
	PutToken(ctx context.Context, key, value string, now int64, ttl time.Duration) error
	// TakeToken returns the value under key and deletes it, atomically: of concurrent
	// takes of one key exactly one gets ok=true. An expired key is not found.
	TakeToken(ctx context.Context, key string, now int64) (value string, ok bool, err error)
	// PeekToken returns the value under key, leaving it stored. An expired key is not found.
	PeekToken(ctx context.Context, key string, now int64) (value string, ok bool, err error)
}

// ErrExists is returned by PutToken for a key already stored.
var ErrExists = errors.New("state: key exists")
