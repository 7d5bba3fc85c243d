package chat

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/google/uuid"

	"github.com/parley-chat/parley/internal/auth"
	"github.com/parley-chat/parley/internal/bus"
	"github.com/parley-chat/parley/internal/store"
	"github.com/parley-chat/parley/protocol"
)

// memberCache keeps member lists for fan-out, each with the version the store gave it
// (store.MemberList). It is bounded: past max entries it starts over, which costs a store
// read per conversation and nothing else.
//
// The versions make it right with several processes writing one database: every append
// names the version it holds, and the store answers a stale one with the list in force when
// the event was stored, read in the append's own transaction. So an event never goes to a
// member another process removed, nor misses one it added.
type memberCache struct {
	mu  sync.RWMutex
	max int
	m   map[string]store.MemberList
}

func newMemberCache(max int) *memberCache {
	return &memberCache{max: max, m: make(map[string]store.MemberList)}
}

func (c *memberCache) get(id string) (store.MemberList, bool) {
	c.mu.RLock()
	l, ok := c.m[id]
	c.mu.RUnlock()
	return l, ok
}

func (c *memberCache) put(id string, l store.MemberList) {
	c.mu.Lock()
	if len(c.m) >= c.max {
		clear(c.m)
	}
	if old, ok := c.m[id]; !ok || old.Version <= l.Version {
		c.m[id] = l
	}
	c.mu.Unlock()
}

func (c *memberCache) drop(id string) {
	c.mu.Lock()
	delete(c.m, id)
	c.mu.Unlock()
}

// changeMembership runs on the sequencer: it applies one change, refreshes the cache, and
// publishes the system event to old and new members alike, so a removed member hears of it.
func (s *Service) changeMembership(m *memberOp) {
	var before []string
	fn := func(c protocol.Conversation) (store.MemberChange, error) {
		before = before[:0]
		for _, mem := range c.Members {
			before = append(before, mem.UserID)
		}
		return m.fn(c)
	}
	msg, err := s.st.ChangeMembership(context.Background(), m.conversationID, s.now().UnixMilli(), fn)
	if err != nil {
		m.result <- memberResult{err: err}
		return
	}
	s.members.drop(m.conversationID)
	if err := s.bus.Publish(bus.ConversationChangedSubject(m.conversationID), nil); err != nil {
		s.log.Warn("announce membership change", "conversation", m.conversationID, "err", err)
	}
	after, err := s.memberIDs(m.conversationID)
	if err != nil {
		s.log.Error("member list after change", "conversation", m.conversationID, "err", err)
	}
	recipients := slices.Clone(after)
	for _, u := range before {
		if !slices.Contains(after, u) {
			recipients = append(recipients, u) // removed: hears of it once more
		}
	}
	s.out <- &outgoing{member: &memberOutgoing{op: m, msg: msg, recipients: recipients}}
}

// change queues fn for conversationID on the sequencer and waits for the stored system event.
func (s *Service) change(ctx context.Context, conversationID string, fn store.MembershipFunc) (protocol.Message, error) {
	mo := &memberOp{conversationID: conversationID, fn: fn, result: make(chan memberResult, 1)}
	if err := s.enqueue(&op{member: mo}); err != nil {
		return protocol.Message{}, err
	}
	select {
	case r := <-mo.result:
		return r.msg, r.err
	case <-ctx.Done():
		// The change may still commit; the caller's client learns of it by sync.
		return protocol.Message{}, ctx.Err()
	}
}

// CreateDirect returns the direct conversation between userID and otherID, creating it if
// needed (created reports which).
func (s *Service) CreateDirect(ctx context.Context, userID, otherID string) (protocol.Conversation, bool, error) {
	if otherID == userID {
		return protocol.Conversation{}, false, Errorf(protocol.CodeBadRequest, "a direct conversation needs another user")
	}
	if _, err := s.st.UserByID(ctx, otherID); err != nil {
		if isNotFound(err) {
			return protocol.Conversation{}, false, Errorf(protocol.CodeNotFound, "user %s does not exist", Clip(otherID))
		}
		return protocol.Conversation{}, false, err
	}
	c, created, err := s.st.CreateDirect(ctx, newID(), userID, otherID, s.now().UnixMilli())
	if err != nil {
		return protocol.Conversation{}, false, fmt.Errorf("create direct conversation: %w", err)
	}
	if created {
		// No event exists yet for the partner to receive; a conversation change shows in sync.
		c, err = s.st.Conversation(ctx, c.ID, userID)
	}
	return c, created, err
}

// CleanGroupName returns a group's name as stored (auth.CleanName: NFC, trimmed, no control
// or bidirectional characters, something visible), 1 to 64 characters, or a bad_request.
func CleanGroupName(name string) (string, error) {
	name, err := auth.CleanName("name", name, 64)
	if err != nil {
		return "", Errorf(protocol.CodeBadRequest, "%v", err)
	}
	if name == "" {
		return "", Errorf(protocol.CodeBadRequest, "a group name is 1 to 64 characters")
	}
	return name, nil
}

// CreateGroup creates a group named name with creatorID (its first admin) and memberIDs.
func (s *Service) CreateGroup(ctx context.Context, creatorID, name string, memberIDs []string) (protocol.Conversation, error) {
	name, err := CleanGroupName(name)
	if err != nil {
		return protocol.Conversation{}, err
	}
	if len(memberIDs) > 4*s.cfg.MaxGroupMembers { // before dedupe: bound the work
		return protocol.Conversation{}, Errorf(protocol.CodeTooLarge, "a group has at most %d members, %d were asked for", s.cfg.MaxGroupMembers, len(memberIDs))
	}
	ids := dedupe(append([]string{creatorID}, memberIDs...))
	if len(ids) > s.cfg.MaxGroupMembers {
		return protocol.Conversation{}, Errorf(protocol.CodeTooLarge, "a group has at most %d members, %d were asked for", s.cfg.MaxGroupMembers, len(ids))
	}
	if err := s.usersExist(ctx, ids); err != nil {
		return protocol.Conversation{}, err
	}
	c := protocol.Conversation{ID: newID(), Type: protocol.Group, Name: name}
	for _, id := range ids {
		role := protocol.RoleMember
		if id == creatorID {
			role = protocol.RoleAdmin
		}
		c.Members = append(c.Members, protocol.Member{UserID: id, Role: role})
	}
	// Group creation does not pass through the sequencer: nobody can send to a conversation
	// before it exists, so there is nothing to order it against.
	c, msg, err := s.st.CreateGroup(ctx, c, creatorID, s.now().UnixMilli())
	if err != nil {
		return protocol.Conversation{}, fmt.Errorf("create group: %w", err)
	}
	s.publishEvent(msg, "", ids)
	return s.st.Conversation(ctx, c.ID, creatorID)
}

// Rename sets a group's name (admins only).
func (s *Service) Rename(ctx context.Context, actorID, conversationID, name string) (protocol.Message, error) {
	name, err := CleanGroupName(name)
	if err != nil {
		return protocol.Message{}, err
	}
	return s.change(ctx, conversationID, func(c protocol.Conversation) (store.MemberChange, error) {
		if err := requireAdmin(c, actorID); err != nil {
			return store.MemberChange{}, err
		}
		return store.MemberChange{
			Name:    &name,
			ActorID: actorID,
			Event:   protocol.SystemEvent{Action: protocol.SysRenamed, ActorID: actorID, Name: name},
		}, nil
	})
}

// AddMembers adds users to a group (admins only), up to the group size limit.
func (s *Service) AddMembers(ctx context.Context, actorID, conversationID string, userIDs []string) (protocol.Message, error) {
	ids := dedupe(userIDs)
	if len(ids) == 0 {
		return protocol.Message{}, Errorf(protocol.CodeBadRequest, "user_ids is empty")
	}
	if len(ids) > s.cfg.MaxGroupMembers {
		return protocol.Message{}, Errorf(protocol.CodeTooLarge, "a group has at most %d members, %d were given to add", s.cfg.MaxGroupMembers, len(ids))
	}
	if err := s.usersExist(ctx, ids); err != nil {
		return protocol.Message{}, err
	}
	return s.change(ctx, conversationID, func(c protocol.Conversation) (store.MemberChange, error) {
		if err := requireAdmin(c, actorID); err != nil {
			return store.MemberChange{}, err
		}
		var add []protocol.Member
		var added []string
		for _, id := range ids {
			if memberRole(c, id) == "" {
				add = append(add, protocol.Member{UserID: id, Role: protocol.RoleMember})
				added = append(added, id)
			}
		}
		if len(add) == 0 {
			return store.MemberChange{}, Errorf(protocol.CodeConflict, "every user given is already a member")
		}
		if n := len(c.Members) + len(add); n > s.cfg.MaxGroupMembers {
			return store.MemberChange{}, Errorf(protocol.CodeTooLarge, "conversation %s has %d members, adding %d would pass the limit of %d", c.ID, len(c.Members), len(add), s.cfg.MaxGroupMembers)
		}
		return store.MemberChange{
			Add:     add,
			ActorID: actorID,
			Event:   protocol.SystemEvent{Action: protocol.SysMembersAdded, ActorID: actorID, UserIDs: added},
		}, nil
	})
}

// RemoveMember removes userID from a group: an admin removes anyone, a member removes only
// themselves (leaves). When the last admin goes, the longest-standing remaining member
// becomes admin, so a group always keeps one while it has members.
func (s *Service) RemoveMember(ctx context.Context, actorID, conversationID, userID string) (protocol.Message, error) {
	return s.change(ctx, conversationID, func(c protocol.Conversation) (store.MemberChange, error) {
		actorRole := memberRole(c, actorID)
		if actorRole == "" {
			return store.MemberChange{}, store.ErrNotFound
		}
		if c.Type != protocol.Group {
			return store.MemberChange{}, Errorf(protocol.CodeForbidden, "members cannot be removed from a direct conversation")
		}
		if memberRole(c, userID) == "" {
			return store.MemberChange{}, Errorf(protocol.CodeNotFound, "user %s is not a member of conversation %s", Clip(userID), c.ID)
		}
		action := protocol.SysMemberLeft
		if userID != actorID {
			if actorRole != protocol.RoleAdmin {
				return store.MemberChange{}, Errorf(protocol.CodeForbidden, "only a group admin can remove other members")
			}
			action = protocol.SysMemberRemoved
		}
		ch := store.MemberChange{
			Remove:  []string{userID},
			ActorID: actorID,
			Event:   protocol.SystemEvent{Action: action, ActorID: actorID, UserIDs: []string{userID}},
		}
		if promote := successor(c, userID); promote != "" {
			ch.SetRole = []protocol.Member{{UserID: promote, Role: protocol.RoleAdmin}}
		}
		return ch, nil
	})
}

// successor returns the member to promote when leaving is the last admin, or "".
func successor(c protocol.Conversation, leaving string) string {
	for _, m := range c.Members {
		if m.UserID != leaving && m.Role == protocol.RoleAdmin {
			return ""
		}
	}
	for _, m := range c.Members {
		if m.UserID != leaving {
			return m.UserID
		}
	}
	return ""
}

func requireAdmin(c protocol.Conversation, userID string) error {
	role := memberRole(c, userID)
	switch {
	case role == "":
		return store.ErrNotFound
	case c.Type != protocol.Group:
		return Errorf(protocol.CodeForbidden, "a direct conversation has no settings to change")
	case role != protocol.RoleAdmin:
		return Errorf(protocol.CodeForbidden, "only a group admin can do this")
	}
	return nil
}

func memberRole(c protocol.Conversation, userID string) string {
	for _, m := range c.Members {
		if m.UserID == userID {
			return m.Role
		}
	}
	return ""
}

func (s *Service) usersExist(ctx context.Context, ids []string) error {
	users, err := s.st.UsersByID(ctx, ids)
	if err != nil {
		return err
	}
	if len(users) == len(ids) {
		return nil
	}
	found := make(map[string]bool, len(users))
	for _, u := range users {
		found[u.ID] = true
	}
	for _, id := range ids {
		if !found[id] {
			return Errorf(protocol.CodeNotFound, "user %s does not exist", Clip(id))
		}
	}
	return nil
}

func dedupe(ids []string) []string {
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		if id != "" && !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	return out
}

func newID() string { return uuid.Must(uuid.NewV7()).String() }
