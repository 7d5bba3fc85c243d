// Package store defines Parley's durable data: users, devices, contacts, conversations, members
// and the per-conversation event log. Implementations (sqlite, later postgres) must satisfy every
// sentence of the contract below; package storetest checks them with one conformance suite.
//
// The store knows its engine, not chat rules: who may add members or how large a group may be
// is decided by package chat. What the store guarantees is atomicity: a conversation's seq is
// gapless, a client message id is stored once, and a membership change and its system event
// commit together.
package store

import (
	"context"
	"errors"

	"github.com/parley-chat/parley/protocol"
)

// Errors every implementation returns (possibly wrapped; test with errors.Is).
var (
	ErrNotFound  = errors.New("not found")
	ErrConflict  = errors.New("conflict")
	ErrNotMember = errors.New("not a member of the conversation")
	ErrClosed    = errors.New("store closed")
	// ErrBadCursor is a paging cursor this store did not give out (a client error).
	ErrBadCursor = errors.New("malformed cursor")
	// ErrUnavailable is a write the store cannot make now (its disk is full, or failing):
	// nothing was stored, and the same call may succeed later.
	ErrUnavailable = errors.New("store cannot write now")
)

// Store is the whole durable data layer. All methods are safe for concurrent use.
type Store interface {
	Users
	Devices
	Contacts
	Conversations
	Events
	// Probe makes a tiny durable write, to learn whether the store takes writes again after
	// ErrUnavailable; it changes nothing a reader sees.
	Probe(ctx context.Context) error
	// Close waits for in-flight calls and releases the engine. Later calls return ErrClosed.
	Close() error
}

// Users stores accounts. Usernames are unique, compared as given (chat lower-cases them).
type Users interface {
	// CreateUser stores u (its ID is set by the caller) with the password hash.
	// ErrConflict if the username is taken.
	CreateUser(ctx context.Context, u protocol.User, passwordHash string) error
	// UserByUsername returns the user and its password hash, or ErrNotFound.
	UserByUsername(ctx context.Context, username string) (protocol.User, string, error)
	// UserByID returns the user or ErrNotFound.
	UserByID(ctx context.Context, id string) (protocol.User, error)
	// UsersByID returns the users that exist among ids, in no particular order.
	UsersByID(ctx context.Context, ids []string) ([]protocol.User, error)
	// SetDisplayName updates the display name and returns the user, or ErrNotFound.
	SetDisplayName(ctx context.Context, id, displayName string) (protocol.User, error)
	// SearchUsers returns up to limit users whose username starts with prefix, ordered by
	// username. An empty prefix matches every user.
	SearchUsers(ctx context.Context, prefix string, limit int) ([]protocol.User, error)
}

// Device is one login of a user. Each login creates one; logout revokes it.
type Device struct {
	ID     string
	UserID string
	Name   string
	// RefreshHash is the hash of the device's current refresh token (never the token).
	RefreshHash      string
	RefreshExpiresTS int64
	CreatedTS        int64
	RevokedTS        int64 // 0 while active
}

// Devices stores logins and their refresh tokens.
type Devices interface {
	// CreateDevice stores d. ErrConflict if the ID exists.
	CreateDevice(ctx context.Context, d Device) error
	// Device returns the device by ID (revoked ones too), or ErrNotFound.
	Device(ctx context.Context, id string) (Device, error)
	// DeviceByRefreshHash returns the active (not revoked) device whose current refresh hash
	// is hash, or ErrNotFound.
	DeviceByRefreshHash(ctx context.Context, hash string) (Device, error)
	// RotateRefresh replaces the device's refresh hash with newHash only if the current one is
	// oldHash and the device is active; otherwise ErrNotFound. Exactly one of two concurrent
	// rotations of the same old hash succeeds. oldHash is remembered as rotated out of the
	// device at nowTS until expiresTS (DeviceByRotatedRefresh); rows of the device expired at
	// nowTS are dropped, and only the device's 16 most recent rotations are kept.
	RotateRefresh(ctx context.Context, deviceID, oldHash, newHash string, expiresTS, nowTS int64) error
	// DeviceByRotatedRefresh returns the device (revoked or not) that rotated hash out, and
	// when, while that is remembered; otherwise ErrNotFound.
	DeviceByRotatedRefresh(ctx context.Context, hash string) (d Device, rotatedTS int64, err error)
	// DevicesOf returns userID's active devices, oldest first.
	DevicesOf(ctx context.Context, userID string) ([]Device, error)
	// RevokeDevice marks the device revoked at ts. Revoking twice is not an error;
	// ErrNotFound if there is no such device.
	RevokeDevice(ctx context.Context, deviceID string, ts int64) error
}

// Contacts stores each user's one-way contact list.
type Contacts interface {
	// PutContact adds contactID to userID's contacts; adding twice is not an error.
	// ErrNotFound if contactID is not a user.
	PutContact(ctx context.Context, userID, contactID string, ts int64) error
	// DeleteContact removes it; removing a missing contact is not an error.
	DeleteContact(ctx context.Context, userID, contactID string) error
	// ContactsOf returns userID's contacts ordered by username.
	ContactsOf(ctx context.Context, userID string) ([]protocol.User, error)
	// PresenceAudience returns the users who may see userID's presence, each once, in no
	// particular order: the contacts userID listed (listing someone is consenting to be seen
	// by them) and userID's direct-conversation partners.
	PresenceAudience(ctx context.Context, userID string) ([]string, error)
	// PresenceVisible returns the users whose presence viewerID may see: those who list
	// viewerID as a contact, and viewerID's direct-conversation partners. It is the inverse
	// of PresenceAudience: v is in PresenceVisible(u) exactly when u is in
	// PresenceAudience(v).
	PresenceVisible(ctx context.Context, viewerID string) ([]string, error)
}

// MemberChange is what a MembershipFunc decides to do to a conversation. The store applies it
// and appends Event as one system message with the next seq, in the same transaction.
type MemberChange struct {
	Add     []protocol.Member // new members with their roles
	Remove  []string          // user IDs to remove
	SetRole []protocol.Member // existing members whose role changes
	Name    *string           // new name, if any
	Event   protocol.SystemEvent
	// ActorID is the system message's sender_id; ClientID its id (may be empty: the store
	// then makes one up).
	ActorID  string
	ClientID string
}

// MembershipFunc sees the current conversation (members included, as the store holds them
// inside the transaction) and returns the change to make, or an error that aborts the
// transaction and is returned as is.
type MembershipFunc func(c protocol.Conversation) (MemberChange, error)

// MaxUnread bounds a view's UnreadCount: a conversation with more unread messages shows
// this many. Counting is a range scan of the log after the read cursor, so without a bound a
// view of a conversation with a million unread messages cost a second (docs/benchmarks.md);
// clients show it as "999+" or less.
const MaxUnread = 1000

// Conversations stores conversations and their members.
type Conversations interface {
	// CreateDirect returns the one direct conversation between users a and b, creating it (with
	// both as members, role member) if there is none: created says which. Concurrent calls for
	// the same pair, in either order, all return the same conversation. id is used only if
	// it creates one.
	CreateDirect(ctx context.Context, id, a, b string, ts int64) (c protocol.Conversation, created bool, err error)
	// CreateGroup creates a group with the given members (creator among them, as admin) and
	// appends its "created" system event as seq 1, atomically.
	CreateGroup(ctx context.Context, c protocol.Conversation, creatorID string, ts int64) (protocol.Conversation, protocol.Message, error)
	// ChangeMembership runs fn on the current state of conversation id inside a transaction
	// that serialises it with appends and other changes to the same conversation, applies the
	// change and stores its system message with the next seq. ErrNotFound if there is no
	// such conversation.
	ChangeMembership(ctx context.Context, id string, ts int64, fn MembershipFunc) (protocol.Message, error)
	// Conversation returns the conversation as userID sees it, or ErrNotFound if it does not
	// exist or userID is not a member.
	Conversation(ctx context.Context, id, userID string) (protocol.Conversation, error)
	// ConversationsOf pages userID's conversations, most recent activity first. cursor is
	// opaque ("" = first page); next is "" when there are no more.
	ConversationsOf(ctx context.Context, userID, cursor string, limit int) (cs []protocol.Conversation, next string, err error)
	// MemberIDs returns the user IDs of the conversation's members, or ErrNotFound.
	MemberIDs(ctx context.Context, id string) ([]string, error)
	// Members returns the conversation's member list with its version, or ErrNotFound.
	Members(ctx context.Context, id string) (MemberList, error)
	// IsMember reports whether userID is a member of conversation id.
	IsMember(ctx context.Context, id, userID string) (bool, error)
}

// AppendRequest is one event to append to a conversation's log. Every kind takes its own seq.
// An edit (TargetSeq, Body) replaces the target's body and sets its EditedTS to TS; a delete
// marks the target Deleted and drops its body and attachments; a reaction adds (or, with
// Remove, removes) the sender's Emoji on the target. Their targets must be text messages of
// the same conversation that are not deleted.
type AppendRequest struct {
	ConversationID string
	SenderID       string
	// ClientID is the client's message id: the dedupe key is (conversation, sender, client
	// id). (SQLite enforces it across conversations too; PostgreSQL cannot on a table
	// partitioned by conversation, and no client reuses an id in another conversation.)
	ClientID    string
	Kind        string // protocol.KindText, ...
	Body        string
	ReplyTo     int64
	TargetSeq   int64
	Emoji       string
	Remove      bool
	Attachments []byte // JSON, or nil
	TS          int64
	// MemberVersion is the version of the conversation's member list the caller holds (0:
	// none). When it is not the current one, the result carries the current list.
	MemberVersion int64
}

// MemberList is a conversation's members as of one point in its log, and the version that
// names that list: it changes with every membership change and with nothing else.
type MemberList struct {
	Version int64
	IDs     []string // in join order
}

// AppendResult answers one AppendRequest.
type AppendResult struct {
	// Message is the stored event. For a duplicate it is the event first stored under the
	// same (sender, client id), with its original seq and ts.
	Message   protocol.Message
	Duplicate bool
	// Members is the member list in force when Message was stored, read in the same
	// transaction, for fan-out; set (on a new event) when the request's MemberVersion is not
	// that list's version. A caller that caches member lists by version never sends an event
	// to a removed member or misses a new one, whichever process changed the membership.
	Members *MemberList
	// Err is per request: ErrNotMember if the sender is not a member when the batch commits,
	// ErrNotFound if an edit, delete or reaction has no valid target, or a reply_to is beyond
	// the conversation's last seq. A failed request takes
	// no seq.
	Err error
}

// CursorUpdate moves one member's "delivered" or "read" cursor.
type CursorUpdate struct {
	ConversationID, UserID, Status string
	Seq, TS                        int64
}

// CursorResult answers one CursorUpdate: whether a cursor moved, and both cursors after it.
type CursorResult struct {
	Changed               bool
	ReadSeq, DeliveredSeq int64
	Err                   error
}

// Durable waits until a committed write is on stable storage (see Events.AppendCommitted).
type Durable func(ctx context.Context) error

// Events stores the per-conversation event log and per-member read state.
type Events interface {
	// Append stores a batch of events in one durable transaction: when it returns nil, every
	// result without Err is on stable storage (group commit: one sync for the whole batch).
	// Within a conversation, events take consecutive seqs in batch order, continuing from
	// the conversation's last seq with no gap. A request whose (sender, client id) is already
	// stored, earlier or in the same batch, takes no new seq and returns the original with
	// Duplicate set. An error from Append itself means nothing of the batch was stored.
	Append(ctx context.Context, reqs []AppendRequest) ([]AppendResult, error)
	// AppendCommitted is Append in two steps, for a caller that commits batch after batch
	// (the chat sequencer): it returns once the batch is committed, so that the next
	// AppendCommitted continues from it, with durable, which returns nil once the batch is
	// on stable storage. Nothing of the batch may be acknowledged or published before
	// durable returns nil, and reads do not show it before then; meanwhile the caller may
	// commit its next batch, so one batch's sync overlaps the next one's transaction. An
	// error from durable means the batch may be lost in a crash: report it as failed. It
	// means the store can no longer promise durability either, so it refuses every later
	// call.
	// durable may be called after Close.
	AppendCommitted(ctx context.Context, reqs []AppendRequest) (results []AppendResult, durable Durable, err error)
	// Messages returns up to limit events of the conversation with after < seq < before
	// (before 0 = no upper bound; after < 0 = no lower bound), ascending by seq, and whether
	// more exist in that range beyond the page. With a lower bound the page is the oldest
	// one above it (catching up); without, the newest one below before (scrolling back). Originals carry
	// their current state. ErrNotFound if userID is not a member.
	Messages(ctx context.Context, conversationID, userID string, before, after int64, limit int) (ms []protocol.Message, hasMore bool, err error)
	// Sync returns up to limit (<= 0: 500) of userID's conversations that changed after
	// token since ("" = all): new events, membership, the user's read state, oldest change
	// first. next is the token to pass next time; more says that more changed conversations
	// remain, for a call with next at once. Tokens are opaque and the store's own:
	// ErrBadCursor for one it did not give out.
	Sync(ctx context.Context, userID, since string, limit int) (cs []protocol.Conversation, next string, more bool, err error)
	// Departed returns the conversations userID stopped being a member of (removed, or
	// left) after token since (a Sync token; "" = none) and has not joined again. Called
	// after Sync with the same since, it reports every departure up to Sync's next (and
	// perhaps some after, which the following call reports again).
	Departed(ctx context.Context, userID, since string) ([]string, error)
	// Message returns one event of the conversation by seq, an original with its current
	// state as in Messages, or ErrNotFound. It checks no membership: the caller has.
	Message(ctx context.Context, conversationID string, seq int64) (protocol.Message, error)
	// SetCursor moves userID's cumulative "delivered" or "read" cursor in the conversation to
	// seq, clamped to the conversation's last seq. A cursor only moves forward, and moving
	// the read cursor moves the delivered cursor to at least the same seq. changed says
	// whether either cursor moved; a change shows in Sync for that user. ErrNotMember if
	// userID is not a member.
	SetCursor(ctx context.Context, conversationID, userID, status string, seq int64, ts int64) (changed bool, err error)
	// SetCursors applies a batch of cursor updates in one transaction, in order, each as
	// SetCursor would (so later updates of the same member see earlier ones). Errors that
	// concern one update (ErrNotMember, an unknown status) are in its result; an error from
	// SetCursors itself means none was applied.
	SetCursors(ctx context.Context, ups []CursorUpdate) ([]CursorResult, error)
}
