// Package protocol holds Parley's wire types: the JSON shapes of the HTTP API and of WebSocket
// frames, exactly as docs/protocol.md describes them. The server, the Go client SDK, the load
// generator and the tests all use these types, so a change here is a change to the contract.
package protocol

import "encoding/json"

// Error codes carried in HTTP error bodies and WebSocket error frames.
const (
	CodeBadRequest   = "bad_request"
	CodeUnauthorized = "unauthorized"
	CodeForbidden    = "forbidden"
	CodeNotFound     = "not_found"
	CodeConflict     = "conflict"
	CodeTooLarge     = "too_large"
	CodeRateLimited  = "rate_limited"
	CodeInternal     = "internal"
	CodeUnavailable  = "unavailable" // server draining or unable to store now; retry elsewhere or later
	// CodeMethodNotAllowed is HTTP 405: the path exists, not with this method (see Allow).
	CodeMethodNotAllowed = "method_not_allowed"
)

// Conversation types.
const (
	Direct = "direct"
	Group  = "group"
)

// Member roles.
const (
	RoleAdmin  = "admin"
	RoleMember = "member"
)

// Message kinds.
const (
	KindText     = "text"
	KindEdit     = "edit"
	KindDelete   = "delete"
	KindReaction = "reaction"
	KindSystem   = "system"
)

// System event actions, carried in Message.System.
const (
	SysCreated       = "created"
	SysMembersAdded  = "members_added"
	SysMemberRemoved = "member_removed"
	SysMemberLeft    = "member_left"
	SysRenamed       = "renamed"
	SysRoleChanged   = "role_changed"
)

// User is a public account profile.
type User struct {
	ID          string `json:"id"`
	Username    string `json:"username"`
	DisplayName string `json:"display_name"`
	CreatedTS   int64  `json:"created_ts"`
}

// Member is one user's membership in a conversation. The cursors (additive to PROTOCOL.md)
// let a client draw delivered and read ticks for messages sent before it connected; live
// `receipt` frames move them after that.
type Member struct {
	UserID           string `json:"user_id"`
	Role             string `json:"role"`
	LastDeliveredSeq int64  `json:"last_delivered_seq"`
	LastReadSeq      int64  `json:"last_read_seq"`
}

// Conversation is a conversation as one member sees it: LastReadSeq and UnreadCount are that
// member's.
type Conversation struct {
	ID          string   `json:"id"`
	Type        string   `json:"type"`
	Name        string   `json:"name"`
	Members     []Member `json:"members"`
	LastSeq     int64    `json:"last_seq"`
	LastReadSeq int64    `json:"last_read_seq"`
	// LastDeliveredSeq is the member's delivered cursor (additive to PROTOCOL.md).
	LastDeliveredSeq int64    `json:"last_delivered_seq"`
	UnreadCount      int64    `json:"unread_count"`
	LastMessage      *Message `json:"last_message,omitempty"`
	CreatedTS        int64    `json:"created_ts"`
	UpdatedTS        int64    `json:"updated_ts"`
}

// Reaction aggregates one emoji on a message.
type Reaction struct {
	Emoji   string   `json:"emoji"`
	Count   int      `json:"count"`
	UserIDs []string `json:"user_ids"`
}

// SystemEvent describes a membership or settings change (additive to PROTOCOL.md: the
// machine-readable form of a system message).
type SystemEvent struct {
	Action  string   `json:"action"`
	ActorID string   `json:"actor_id"`
	UserIDs []string `json:"user_ids,omitempty"`
	Name    string   `json:"name,omitempty"`
	Role    string   `json:"role,omitempty"`
}

// Message is one stored event of a conversation. In history an original message also carries
// its current state: Body after edits, Deleted, aggregated Reactions.
type Message struct {
	ConversationID string          `json:"conversation_id"`
	Seq            int64           `json:"seq"`
	ID             string          `json:"id"`
	SenderID       string          `json:"sender_id"`
	Kind           string          `json:"kind"`
	Body           string          `json:"body,omitempty"`
	ReplyTo        int64           `json:"reply_to,omitempty"`
	TargetSeq      int64           `json:"target_seq,omitempty"`
	Emoji          string          `json:"emoji,omitempty"`
	Remove         bool            `json:"remove,omitempty"`
	Attachments    json.RawMessage `json:"attachments,omitempty"`
	System         *SystemEvent    `json:"system,omitempty"`
	TS             int64           `json:"ts"`
	EditedTS       int64           `json:"edited_ts,omitempty"`
	Deleted        bool            `json:"deleted,omitempty"`
	Reactions      []Reaction      `json:"reactions,omitempty"`
}

// Error is the body of every HTTP error: {"error":{"code","message"}}.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// RetryAfterMS is set on rate_limited: how long to wait before trying again (the
	// Retry-After header says the same in whole seconds).
	RetryAfterMS int64 `json:"retry_after_ms,omitempty"`
}

// ErrorBody wraps Error as it appears on the wire.
type ErrorBody struct {
	Error Error `json:"error"`
}

// HTTP request and response bodies.
type (
	SignupRequest struct {
		Username    string `json:"username"`
		Password    string `json:"password"`
		DisplayName string `json:"display_name,omitempty"`
	}
	LoginRequest struct {
		Username   string `json:"username"`
		Password   string `json:"password"`
		DeviceName string `json:"device_name,omitempty"`
	}
	RefreshRequest struct {
		RefreshToken string `json:"refresh_token"`
	}
	Tokens struct {
		AccessToken  string `json:"access_token"`
		RefreshToken string `json:"refresh_token"`
		ExpiresIn    int64  `json:"expires_in"` // seconds
		UserID       string `json:"user_id"`
		DeviceID     string `json:"device_id"`
	}
	UserBody struct {
		User User `json:"user"`
	}
	UsersBody struct {
		Users []User `json:"users"`
	}
	PatchMeRequest struct {
		DisplayName *string `json:"display_name,omitempty"`
	}
	CreateConversationRequest struct {
		Type      string   `json:"type"`
		Name      string   `json:"name,omitempty"`
		MemberIDs []string `json:"member_ids"`
	}
	PatchConversationRequest struct {
		Name *string `json:"name,omitempty"`
	}
	AddMembersRequest struct {
		UserIDs []string `json:"user_ids"`
	}
	ConversationBody struct {
		Conversation Conversation `json:"conversation"`
	}
	ConversationsBody struct {
		Conversations []Conversation `json:"conversations"`
		HasMore       bool           `json:"has_more"`
		NextCursor    string         `json:"next_cursor,omitempty"`
	}
	MessagesBody struct {
		Messages []Message `json:"messages"`
		HasMore  bool      `json:"has_more"`
	}
	SyncBody struct {
		Conversations []Conversation `json:"conversations"`
		// RemovedConversationIDs (additive to PROTOCOL.md) are conversations the caller
		// left or was removed from since the token; absent on a first sync.
		RemovedConversationIDs []string `json:"removed_conversation_ids,omitempty"`
		NextSince              string   `json:"next_since"`
		// HasMore says that more changed conversations remain than this page held: call
		// again at once with NextSince.
		HasMore bool `json:"has_more"`
	}
	Presence struct {
		UserID     string `json:"user_id"`
		Status     string `json:"status"`
		LastSeenTS int64  `json:"last_seen_ts"`
	}
	PresenceBody struct {
		Presence []Presence `json:"presence"`
	}
	TicketBody struct {
		Ticket    string `json:"ticket"`
		ExpiresIn int64  `json:"expires_in"`
	}
)

// WebSocket frame types.
const (
	FrameReady    = "ready"
	FrameSend     = "send"
	FrameEdit     = "edit"
	FrameDelete   = "delete"
	FrameReact    = "react"
	FrameReceipt  = "receipt"
	FrameTyping   = "typing"
	FramePing     = "ping"
	FramePong     = "pong"
	FrameAck      = "ack"
	FrameError    = "error"
	FrameMessage  = "message"
	FramePresence = "presence"
	FrameGoaway   = "goaway"
)

// ClientFrame is any frame a client sends; Type says which fields apply.
type ClientFrame struct {
	Type           string          `json:"type"`
	ID             string          `json:"id,omitempty"`
	ConversationID string          `json:"conversation_id,omitempty"`
	Body           string          `json:"body,omitempty"`
	ReplyTo        int64           `json:"reply_to,omitempty"`
	Attachments    json.RawMessage `json:"attachments,omitempty"`
	TargetSeq      int64           `json:"target_seq,omitempty"`
	Emoji          string          `json:"emoji,omitempty"`
	Remove         bool            `json:"remove,omitempty"`
	Status         string          `json:"status,omitempty"`
	Seq            int64           `json:"seq,omitempty"`
	State          string          `json:"state,omitempty"`
}

// Server frames.
type (
	ReadyFrame struct {
		Type        string `json:"type"`
		UserID      string `json:"user_id"`
		DeviceID    string `json:"device_id"`
		HeartbeatMS int64  `json:"heartbeat_ms"`
	}
	AckFrame struct {
		Type           string `json:"type"`
		ID             string `json:"id"`
		ConversationID string `json:"conversation_id"`
		Seq            int64  `json:"seq"`
		TS             int64  `json:"ts"`
	}
	ErrorFrame struct {
		Type    string `json:"type"`
		ID      string `json:"id,omitempty"`
		Code    string `json:"code"`
		Message string `json:"message"`
		// RetryAfterMS is set on rate_limited: the frame may be sent again after this long.
		RetryAfterMS int64 `json:"retry_after_ms,omitempty"`
	}
	PongFrame struct {
		Type string `json:"type"`
		ID   string `json:"id,omitempty"`
	}
	// MessageFrame is a Message with "type":"message" in front.
	MessageFrame struct {
		Type string `json:"type"`
		Message
	}
	ReceiptFrame struct {
		Type           string `json:"type"`
		ConversationID string `json:"conversation_id"`
		UserID         string `json:"user_id"`
		Status         string `json:"status"`
		Seq            int64  `json:"seq"`
		TS             int64  `json:"ts"`
	}
	TypingFrame struct {
		Type           string `json:"type"`
		ConversationID string `json:"conversation_id"`
		UserID         string `json:"user_id"`
		State          string `json:"state"`
	}
	PresenceFrame struct {
		Type       string `json:"type"`
		UserID     string `json:"user_id"`
		Status     string `json:"status"`
		LastSeenTS int64  `json:"last_seen_ts"`
	}
	GoawayFrame struct {
		Type        string `json:"type"`
		ReconnectMS int64  `json:"reconnect_ms"`
		Reason      string `json:"reason"`
	}
)

// ServerFrame is any frame the server sends, for clients that decode frames generically.
type ServerFrame struct {
	Type string `json:"type"`
	Message
	// Fields of frames other than message; Message's fields cover the rest.
	Code        string `json:"code,omitempty"`
	ErrMessage  string `json:"message,omitempty"` // the text of an error frame
	UserID      string `json:"user_id,omitempty"`
	DeviceID    string `json:"device_id,omitempty"`
	HeartbeatMS int64  `json:"heartbeat_ms,omitempty"`
	Status      string `json:"status,omitempty"`
	State       string `json:"state,omitempty"`
	LastSeenTS  int64  `json:"last_seen_ts,omitempty"`
	ReconnectMS int64  `json:"reconnect_ms,omitempty"`
	Reason      string `json:"reason,omitempty"`
	// RetryAfterMS is the wait a rate_limited error frame asks for.
	RetryAfterMS int64 `json:"retry_after_ms,omitempty"`
}
