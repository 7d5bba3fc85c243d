package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/parley-chat/parley/protocol"
)

// This file wraps every authenticated endpoint of the wire contract, one method each. They
// all refresh the tokens once on a 401 (see Client.do) and return *APIError for error
// answers.

// Me returns the logged-in user.
func (c *Client) Me(ctx context.Context) (protocol.User, error) {
	var out protocol.UserBody
	_, err := c.do(ctx, http.MethodGet, "/me", nil, nil, &out, true)
	return out.User, err
}

// UpdateMe sets the logged-in user's display name.
func (c *Client) UpdateMe(ctx context.Context, displayName string) (protocol.User, error) {
	var out protocol.UserBody
	_, err := c.do(ctx, http.MethodPatch, "/me", nil, protocol.PatchMeRequest{DisplayName: &displayName}, &out, true)
	return out.User, err
}

// User returns one user's public profile.
func (c *Client) User(ctx context.Context, id string) (protocol.User, error) {
	var out protocol.UserBody
	_, err := c.do(ctx, http.MethodGet, "/users/"+url.PathEscape(id), nil, nil, &out, true)
	return out.User, err
}

// SearchUsers returns users whose username starts with prefix.
func (c *Client) SearchUsers(ctx context.Context, prefix string) ([]protocol.User, error) {
	var out protocol.UsersBody
	_, err := c.do(ctx, http.MethodGet, "/users", url.Values{"prefix": {prefix}}, nil, &out, true)
	return out.Users, err
}

// PutContact adds userID to the caller's contacts (contacts see each other's presence).
func (c *Client) PutContact(ctx context.Context, userID string) error {
	_, err := c.do(ctx, http.MethodPut, "/contacts/"+url.PathEscape(userID), nil, nil, nil, true)
	return err
}

// DeleteContact removes userID from the caller's contacts.
func (c *Client) DeleteContact(ctx context.Context, userID string) error {
	_, err := c.do(ctx, http.MethodDelete, "/contacts/"+url.PathEscape(userID), nil, nil, nil, true)
	return err
}

// contactsBody accepts both plausible shapes of GET /contacts, which PROTOCOL.md leaves
// unspecified: {users:[...]} like /users, or {contacts:[...]}.
type contactsBody struct {
	Users    []protocol.User `json:"users"`
	Contacts []protocol.User `json:"contacts"`
}

// Contacts returns the caller's contacts.
func (c *Client) Contacts(ctx context.Context) ([]protocol.User, error) {
	var out contactsBody
	_, err := c.do(ctx, http.MethodGet, "/contacts", nil, nil, &out, true)
	if out.Users == nil {
		return out.Contacts, err
	}
	return out.Users, err
}

// CreateDirect returns the direct conversation with otherID, creating it if the pair has
// none; created reports which (201 vs 200).
func (c *Client) CreateDirect(ctx context.Context, otherID string) (conv protocol.Conversation, created bool, err error) {
	var out protocol.ConversationBody
	status, err := c.do(ctx, http.MethodPost, "/conversations", nil,
		protocol.CreateConversationRequest{Type: protocol.Direct, MemberIDs: []string{otherID}}, &out, true)
	return out.Conversation, status == http.StatusCreated, err
}

// CreateGroup creates a group named name with the caller (as admin) and memberIDs.
func (c *Client) CreateGroup(ctx context.Context, name string, memberIDs []string) (protocol.Conversation, error) {
	if memberIDs == nil {
		memberIDs = []string{} // the contract has member_ids as an array, never null
	}
	var out protocol.ConversationBody
	_, err := c.do(ctx, http.MethodPost, "/conversations", nil,
		protocol.CreateConversationRequest{Type: protocol.Group, Name: name, MemberIDs: memberIDs}, &out, true)
	return out.Conversation, err
}

// Conversation returns one conversation as the caller sees it (404 for non-members).
func (c *Client) Conversation(ctx context.Context, id string) (protocol.Conversation, error) {
	var out protocol.ConversationBody
	_, err := c.do(ctx, http.MethodGet, "/conversations/"+url.PathEscape(id), nil, nil, &out, true)
	return out.Conversation, err
}

// Conversations returns one page of the caller's conversations, most recent activity first.
// cursor is "" for the first page, then the previous page's NextCursor; limit 0 is the
// server's default.
func (c *Client) Conversations(ctx context.Context, cursor string, limit int) (protocol.ConversationsBody, error) {
	q := url.Values{}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out protocol.ConversationsBody
	_, err := c.do(ctx, http.MethodGet, "/conversations", q, nil, &out, true)
	return out, err
}

// RenameConversation renames a group (group admins only).
func (c *Client) RenameConversation(ctx context.Context, id, name string) error {
	_, err := c.do(ctx, http.MethodPatch, "/conversations/"+url.PathEscape(id), nil,
		protocol.PatchConversationRequest{Name: &name}, nil, true)
	return err
}

// AddMembers adds users to a group (group admins only).
func (c *Client) AddMembers(ctx context.Context, id string, userIDs []string) error {
	_, err := c.do(ctx, http.MethodPost, "/conversations/"+url.PathEscape(id)+"/members", nil,
		protocol.AddMembersRequest{UserIDs: userIDs}, nil, true)
	return err
}

// RemoveMember removes userID from a conversation: an admin removing someone, or, with the
// caller's own user id, the caller leaving.
func (c *Client) RemoveMember(ctx context.Context, id, userID string) error {
	_, err := c.do(ctx, http.MethodDelete,
		"/conversations/"+url.PathEscape(id)+"/members/"+url.PathEscape(userID), nil, nil, nil, true)
	return err
}

// Messages returns one page of a conversation's events, ascending by seq, with
// after < seq < before (0 = unbounded). With no after bound it is the newest page below
// before; with one, the oldest page above it. limit 0 is the server's default.
func (c *Client) Messages(ctx context.Context, conversationID string, before, after int64, limit int) (protocol.MessagesBody, error) {
	q := url.Values{}
	if before > 0 {
		q.Set("before", strconv.FormatInt(before, 10))
	}
	if after > 0 {
		q.Set("after", strconv.FormatInt(after, 10))
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out protocol.MessagesBody
	_, err := c.do(ctx, http.MethodGet, "/conversations/"+url.PathEscape(conversationID)+"/messages", q, nil, &out, true)
	return out, err
}

// Sync returns the caller's conversations that changed since the token (all of them for "")
// and the token to pass next time: every page the server has, merged (a conversation that
// changed again while the pages were read is kept once, as last seen).
func (c *Client) Sync(ctx context.Context, since string) (protocol.SyncBody, error) {
	var all protocol.SyncBody
	at := map[string]int{}
	for {
		page, err := c.SyncPage(ctx, since, 0)
		if err != nil {
			return protocol.SyncBody{}, err
		}
		for _, cv := range page.Conversations {
			if i, ok := at[cv.ID]; ok {
				all.Conversations[i] = cv
				continue
			}
			at[cv.ID] = len(all.Conversations)
			all.Conversations = append(all.Conversations, cv)
		}
		all.RemovedConversationIDs = append(all.RemovedConversationIDs, page.RemovedConversationIDs...)
		all.NextSince = page.NextSince
		if !page.HasMore {
			if all.Conversations == nil {
				all.Conversations = []protocol.Conversation{}
			}
			return all, nil
		}
		since = page.NextSince
	}
}

// SyncPage is one page of Sync: at most limit conversations (0: the server's default, 500),
// with HasMore set when more remain.
func (c *Client) SyncPage(ctx context.Context, since string, limit int) (protocol.SyncBody, error) {
	q := url.Values{}
	if since != "" {
		q.Set("since", since)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out protocol.SyncBody
	_, err := c.do(ctx, http.MethodGet, "/sync", q, nil, &out, true)
	return out, err
}

// Presence returns the presence of the given users (those the caller may see).
func (c *Client) Presence(ctx context.Context, userIDs []string) ([]protocol.Presence, error) {
	var out protocol.PresenceBody
	_, err := c.do(ctx, http.MethodGet, "/presence", url.Values{"user_ids": {strings.Join(userIDs, ",")}}, nil, &out, true)
	return out.Presence, err
}

// WSTicket returns a one-time, short-lived ticket that authenticates a WebSocket handshake
// as ?ticket=, for environments that cannot set headers on it.
func (c *Client) WSTicket(ctx context.Context) (protocol.TicketBody, error) {
	var out protocol.TicketBody
	_, err := c.do(ctx, http.MethodPost, "/ws/ticket", nil, nil, &out, true)
	return out, err
}
