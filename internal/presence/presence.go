// Package presence tells users which of their peers are online. Presence is soft state (see
// package state): a device is online while it has heartbeated within the TTL, a user while
// any device is. Changes are announced only to the user's audience (the contacts the user
// listed, and direct-conversation partners, see store.PresenceAudience) and only to their
// online devices,
// because they go through the bus to user subjects that only connected users subscribe to.
//
// Going offline waits for the TTL: a connection that drops and comes back within it (a
// flapping network, a phone switching from Wi-Fi to mobile data) changes nothing and
// announces nothing. That is the debounce.
package presence

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"time"

	"github.com/parley-chat/parley/internal/bus"
	"github.com/parley-chat/parley/internal/frame"
	"github.com/parley-chat/parley/internal/state"
	"github.com/parley-chat/parley/internal/store"
	"github.com/parley-chat/parley/protocol"
)

// Statuses.
const (
	Online  = "online"
	Offline = "offline"
)

// Config tunes presence. Zero fields take the defaults.
type Config struct {
	TTL   time.Duration // a device without a heartbeat for this long is offline (default 30s)
	Sweep time.Duration // how often expired devices are collected (default 1s)
}

// Service tracks presence and announces changes. Create it with New; stop it with Close.
type Service struct {
	cfg   Config
	state state.Presence
	store store.Contacts
	bus   bus.Bus
	log   *slog.Logger
	now   func() time.Time

	stop chan struct{}
	done chan struct{}
}

// New builds the service and starts its sweeper.
func New(cfg Config, st state.Presence, peers store.Contacts, b bus.Bus, log *slog.Logger) *Service {
	if cfg.TTL <= 0 {
		cfg.TTL = 30 * time.Second
	}
	if cfg.Sweep <= 0 {
		cfg.Sweep = time.Second
	}
	s := &Service{cfg: cfg, state: st, store: peers, bus: b, log: log, now: time.Now,
		stop: make(chan struct{}), done: make(chan struct{})}
	go s.sweep()
	return s
}

// Close stops the sweeper.
func (s *Service) Close() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
}

// Heartbeat records that a device is alive, announcing the user online if it was not.
func (s *Service) Heartbeat(ctx context.Context, userID, deviceID string) {
	now := s.now().UnixMilli()
	came, err := s.state.Heartbeat(ctx, userID, deviceID, now, s.cfg.TTL)
	if err != nil {
		s.log.Warn("presence heartbeat", "user", userID, "err", err)
		return
	}
	if came {
		s.announce(ctx, userID, Online, now)
	}
}

// Gone records that a device ended its session deliberately (logout): it is offline now,
// without waiting for the TTL.
func (s *Service) Gone(ctx context.Context, userID, deviceID string) {
	now := s.now().UnixMilli()
	went, err := s.state.Offline(ctx, userID, deviceID, now)
	if err != nil {
		s.log.Warn("presence offline", "user", userID, "err", err)
		return
	}
	if went {
		s.announce(ctx, userID, Offline, now)
	}
}

// Lookup returns the presence of the users in ids that viewer may see (itself, users who
// list viewer as a contact, direct partners), in the order asked. Others are left out: a non-peer learns nothing, not even
// whether the user exists.
func (s *Service) Lookup(ctx context.Context, viewer string, ids []string) ([]protocol.Presence, error) {
	peers, err := s.store.PresenceVisible(ctx, viewer)
	if err != nil {
		return nil, err
	}
	var visible []string
	for _, id := range ids {
		if (id == viewer || slices.Contains(peers, id)) && !slices.Contains(visible, id) {
			visible = append(visible, id)
		}
	}
	ps, err := s.state.Lookup(ctx, visible, s.now().UnixMilli())
	if err != nil {
		return nil, err
	}
	out := make([]protocol.Presence, len(ps))
	for i, p := range ps {
		out[i] = protocol.Presence{UserID: p.UserID, Status: status(p.Online), LastSeenTS: p.LastSeenTS}
	}
	return out, nil
}

func status(online bool) string {
	if online {
		return Online
	}
	return Offline
}

// announce publishes a presence frame to every peer of userID.
func (s *Service) announce(ctx context.Context, userID, st string, lastSeen int64) {
	peers, err := s.store.PresenceAudience(ctx, userID)
	if err != nil {
		s.log.Warn("presence audience", "user", userID, "err", err)
		return
	}
	if len(peers) == 0 {
		return
	}
	payload, err := json.Marshal(protocol.PresenceFrame{Type: protocol.FramePresence, UserID: userID, Status: st, LastSeenTS: lastSeen})
	if err != nil {
		return
	}
	env := frame.Delivery("", payload)
	for _, p := range peers {
		if err := s.bus.Publish(bus.UserSubject(p), env); err != nil {
			s.log.Warn("publish presence", "user", p, "err", err)
		}
	}
}

// sweep collects devices whose TTL ran out and announces the users left offline.
func (s *Service) sweep() {
	defer close(s.done)
	t := time.NewTicker(s.cfg.Sweep)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Sweep*5)
		gone, err := s.state.Expire(ctx, s.now().UnixMilli())
		if err != nil {
			s.log.Warn("presence expiry", "err", err)
		}
		for _, u := range gone {
			s.announce(ctx, u.UserID, Offline, u.LastSeenTS)
		}
		cancel()
	}
}
