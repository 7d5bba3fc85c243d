// Package bus moves events between Parley's components and nodes: chat publishes each stored
// event once per recipient user, and every gateway node subscribes to the users it has online.
// The embedded implementation runs a NATS server in-process; scale-out points the same code at
// an external NATS cluster, so only the connection changes.
//
// Delivery is at most once and in order per (publisher, subject): a subscriber that misses
// an event (not connected, too slow) catches up from the store by seq. Nothing on the bus is
// the only copy of anything.
package bus

import (
	"context"
	"strings"
)

// Handler receives one message. It runs on a goroutine owned by the bus, shared by all
// subscriptions of that Bus, so it must not block: hand the work off and return. data is
// only valid until the handler returns unless the implementation says otherwise; Parley's
// handlers enqueue it as an immutable frame, which the NATS implementation allows (it
// allocates each message's payload afresh).
type Handler func(subject string, data []byte)

// Bus publishes and subscribes by subject. Subjects are dot-separated tokens; see the
// subject helpers below for the ones Parley uses.
type Bus interface {
	// Publish sends data to every current subscriber of subject. It may buffer; data may be
	// reused by the caller once Publish returns.
	Publish(subject string, data []byte) error
	// Subscribe calls h for every message published to subject from now on, until the
	// subscription is cancelled or the bus is closed. Subjects may end in ">" (any suffix).
	Subscribe(subject string, h Handler) (Subscription, error)
	// Flush returns once everything published so far has reached the server (not
	// necessarily the subscribers).
	Flush(ctx context.Context) error
	// Close drains subscriptions and stops the bus's goroutines.
	Close() error
}

// Subscription is an active subscription.
type Subscription interface {
	// Unsubscribe stops delivery; after it returns h is called at most for a message
	// whose handling had already begun.
	Unsubscribe() error
}

// UserSubject is where events for every online device of a user are published.
func UserSubject(userID string) string { return "parley.user." + userID }

// UserFromSubject returns the user id of a UserSubject, or "" if subject is not one.
func UserFromSubject(subject string) string {
	id, ok := strings.CutPrefix(subject, "parley.user.")
	if !ok {
		return ""
	}
	return id
}

// ConversationChangedSubject announces a membership change of a conversation, so that every
// chat node drops its cached member list.
func ConversationChangedSubject(conversationID string) string {
	return "parley.conv.changed." + conversationID
}

// ConversationChangedAll matches every ConversationChangedSubject.
const ConversationChangedAll = "parley.conv.changed.>"
