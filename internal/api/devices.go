package api

import (
	"sync"
	"time"

	"github.com/parley-chat/parley/internal/bus"
)

// RevokedSubject announces a logged-out device to every node, so that each drops it from
// its cache of active devices at once.
const RevokedSubject = "parley.devices.revoked"

// activeDevices remembers, for a few seconds, devices the store said were logged in, so that
// a burst of requests (every client of a restarted node reconnecting and syncing at once)
// does not read the store once per request. A logout drops the device here and on every
// other node (RevokedSubject) before it answers, so it still takes effect at once.
type activeDevices struct {
	ttl time.Duration
	mu  sync.Mutex
	m   map[string]activeDevice
}

type activeDevice struct {
	userID string
	until  time.Time
}

// maxActiveDevices bounds the cache; past it the cache starts over.
const maxActiveDevices = 200_000

func newActiveDevices(ttl time.Duration) *activeDevices {
	return &activeDevices{ttl: ttl, m: make(map[string]activeDevice)}
}

// ok reports whether deviceID is cached as an active device of userID.
func (c *activeDevices) ok(deviceID, userID string, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	d, found := c.m[deviceID]
	return found && d.userID == userID && now.Before(d.until)
}

func (c *activeDevices) put(deviceID, userID string, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= maxActiveDevices {
		clear(c.m)
	}
	c.m[deviceID] = activeDevice{userID: userID, until: now.Add(c.ttl)}
}

func (c *activeDevices) drop(deviceID string) {
	c.mu.Lock()
	delete(c.m, deviceID)
	c.mu.Unlock()
}

// subscribe drops devices that any node announces as revoked.
func (c *activeDevices) subscribe(b bus.Bus) (bus.Subscription, error) {
	return b.Subscribe(RevokedSubject, func(_ string, data []byte) { c.drop(string(data)) })
}
