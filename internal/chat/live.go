package chat

import (
	"context"
	"encoding/json"
	"slices"

	"github.com/parley-chat/parley/internal/bus"
	"github.com/parley-chat/parley/internal/frame"
	"github.com/parley-chat/parley/protocol"
)

// Receipt moves userID's delivered or read cursor in a conversation forward to seq and, if
// it moved, tells every member's devices except deviceID. Cursors are cumulative: a receipt
// for seq covers everything up to it, and one that would move a cursor back changes nothing.
func (s *Service) Receipt(ctx context.Context, userID, deviceID, conversationID, status string, seq int64) error {
	if status != "delivered" && status != "read" {
		return Errorf(protocol.CodeBadRequest, `status must be "delivered" or "read"`)
	}
	if conversationID == "" || seq <= 0 {
		return Errorf(protocol.CodeBadRequest, "a receipt needs conversation_id and a positive seq")
	}
	ts := s.now().UnixMilli()
	changed, err := s.st.SetCursor(ctx, conversationID, userID, status, seq, ts)
	if err != nil || !changed {
		return err
	}
	payload, err := json.Marshal(protocol.ReceiptFrame{
		Type: protocol.FrameReceipt, ConversationID: conversationID,
		UserID: userID, Status: status, Seq: seq, TS: ts,
	})
	if err != nil {
		return err
	}
	members, err := s.memberIDs(conversationID)
	if err != nil {
		return err
	}
	s.publishTo(members, nil, frame.Delivery(deviceID, payload))
	return nil
}

// Control is a message for the gateways that hold a user's connections, not for clients.
type Control struct {
	// DisconnectDevice closes every connection of that device (it logged out).
	DisconnectDevice string `json:"disconnect_device,omitempty"`
}

// DisconnectDevice closes the device's open connections on every node, so that a logout
// ends its live session at once, not at its next reconnect.
func (s *Service) DisconnectDevice(userID, deviceID string) error {
	payload, err := json.Marshal(Control{DisconnectDevice: deviceID})
	if err != nil {
		return err
	}
	return s.bus.Publish(bus.UserSubject(userID), frame.Control(payload))
}

// Typing relays a typing indicator to the other members' online devices. It is never stored.
func (s *Service) Typing(ctx context.Context, userID, conversationID, state string) error {
	if state != "start" && state != "stop" {
		return Errorf(protocol.CodeBadRequest, `state must be "start" or "stop"`)
	}
	members, err := s.memberIDs(conversationID)
	if err != nil || !slices.Contains(members, userID) {
		return Errorf(protocol.CodeForbidden, "not a member of conversation %s", clip(conversationID))
	}
	payload, err := json.Marshal(protocol.TypingFrame{
		Type: protocol.FrameTyping, ConversationID: conversationID, UserID: userID, State: state,
	})
	if err != nil {
		return err
	}
	env := frame.Delivery("", payload)
	for _, u := range members {
		if u != userID {
			s.publishTo([]string{u}, nil, env)
		}
	}
	return nil
}
