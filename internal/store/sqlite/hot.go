package sqlite

import "sync"

// hotCache is the writer's memory of conversation log heads and of memberships that were
// found to exist, kept across Append batches so that a batch does not read them again for
// every conversation it touches (two statements per conversation per batch, a fifth of a
// small batch's time in the rate benchmark). It is only changed while Store.writeMu is held,
// together with the transaction that it describes: filled after Append commits (or reads
// without writing), and a conversation is forgotten whenever anything else writes its head
// or its members (ChangeMembership). Memberships are cached positive only: one that did not
// exist is read again, since it may have been created since.
//
// Other Stores open on the same file (other processes) write behind its back: validate,
// given the writer connection's PRAGMA data_version inside the transaction about to use the
// cache, drops everything when that has moved, which it does exactly when another
// connection committed.
type hotCache struct {
	mu      sync.Mutex
	heads   map[string]head
	members map[string]map[string]struct{} // conversation → users
	dv      int64                          // the writer's data_version the cache is current for
}

// validate forgets everything if dv is not the data_version the cache was current for.
func (c *hotCache) validate(dv int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if dv != c.dv {
		clear(c.heads)
		clear(c.members)
		c.dv = dv
	}
}

// maxHot bounds the conversations remembered; past it the cache starts over.
const maxHot = 100_000

func newHotCache() *hotCache {
	return &hotCache{heads: make(map[string]head), members: make(map[string]map[string]struct{})}
}

func (c *hotCache) head(conv string) (head, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h, ok := c.heads[conv]
	return h, ok
}

func (c *hotCache) isMember(conv, user string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.members[conv][user]
	return ok
}

// remember stores what a finished batch knows.
func (c *hotCache) remember(heads map[string]*head, members map[memberKey]bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.heads) > maxHot || len(c.members) > maxHot {
		clear(c.heads)
		clear(c.members)
	}
	for id, h := range heads {
		v := *h
		v.touched = false
		c.heads[id] = v
	}
	for k, ok := range members {
		if !ok {
			continue
		}
		m := c.members[k.conv]
		if m == nil {
			m = make(map[string]struct{})
			c.members[k.conv] = m
		}
		m[k.user] = struct{}{}
	}
}

// forget drops a conversation whose head or members changed outside Append.
func (c *hotCache) forget(conv string) {
	c.mu.Lock()
	delete(c.heads, conv)
	delete(c.members, conv)
	c.mu.Unlock()
}
