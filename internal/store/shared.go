package store

import (
	"encoding/base64"
	"strconv"
	"strings"

	"github.com/parley-chat/parley/protocol"
)

// Pieces both implementations use, so that they agree byte for byte.

// GroupMembers returns the members CreateGroup stores, in order: those of c each once, the
// creator first if missing and an admin either way; and their user IDs.
func GroupMembers(c protocol.Conversation, creatorID string) ([]protocol.Member, []string) {
	members := make([]protocol.Member, 0, len(c.Members)+1)
	seen := make(map[string]bool, len(c.Members)+1)
	hasCreator := false
	for _, m := range c.Members {
		if seen[m.UserID] {
			continue
		}
		seen[m.UserID] = true
		if m.UserID == creatorID {
			m.Role = protocol.RoleAdmin
			hasCreator = true
		}
		members = append(members, m)
	}
	if !hasCreator {
		members = append([]protocol.Member{{UserID: creatorID, Role: protocol.RoleAdmin}}, members...)
	}
	ids := make([]string, len(members))
	for i, m := range members {
		ids[i] = m.UserID
	}
	return members, ids
}

// DirectKey is the unique key of the direct conversation between a and b, in either order.
func DirectKey(a, b string) string {
	if b < a {
		a, b = b, a
	}
	return a + "|" + b
}

// EncodeListCursor is the ConversationsOf cursor after the conversation (ts, id).
func EncodeListCursor(ts int64, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(ts, 10) + ":" + id))
}

// DecodeListCursor reads an EncodeListCursor cursor, or returns ErrBadCursor.
func DecodeListCursor(cursor string) (int64, string, error) {
	b, err := base64.RawURLEncoding.DecodeString(cursor)
	if err != nil {
		return 0, "", ErrBadCursor
	}
	tsText, id, ok := strings.Cut(string(b), ":")
	ts, err := strconv.ParseInt(tsText, 10, 64)
	if !ok || err != nil {
		return 0, "", ErrBadCursor
	}
	return ts, id, nil
}
