// Package frame builds the bytes Parley puts on the wire: server-to-client WebSocket frames
// carrying one JSON object each, and the delivery envelope that carries such a frame over the
// bus from chat to every gateway.
//
// An event is encoded and framed once, where it is produced. A gateway that receives a
// delivery enqueues the very same bytes on every connection of the recipient, so fan-out
// copies and allocates nothing per recipient. Server frames are never masked (RFC 6455 5.1),
// which is what makes sharing one frame between connections possible.
package frame

import (
	"encoding/binary"
	"encoding/json"
	"errors"
)

// WebSocket opcodes used by the server.
const (
	OpText  = 0x1
	OpClose = 0x8
	OpPing  = 0x9
	OpPong  = 0xA
)

// headerLen is the size of an unmasked frame header for a payload of n bytes.
func headerLen(n int) int {
	switch {
	case n < 126:
		return 2
	case n <= 0xFFFF:
		return 4
	default:
		return 10
	}
}

// putHeader writes a final, unmasked frame header for opcode op and payload length n into b,
// which must have room for headerLen(n) bytes, and returns the bytes written.
func putHeader(b []byte, op byte, n int) int {
	b[0] = 0x80 | op
	switch {
	case n < 126:
		b[1] = byte(n)
		return 2
	case n <= 0xFFFF:
		b[1] = 126
		binary.BigEndian.PutUint16(b[2:], uint16(n))
		return 4
	default:
		b[1] = 127
		binary.BigEndian.PutUint64(b[2:], uint64(n))
		return 10
	}
}

// Build returns a complete frame with opcode op around payload, in one allocation.
func Build(op byte, payload []byte) []byte {
	b := make([]byte, headerLen(len(payload))+len(payload))
	n := putHeader(b, op, len(payload))
	copy(b[n:], payload)
	return b
}

// Text returns a text frame holding payload.
func Text(payload []byte) []byte { return Build(OpText, payload) }

// JSON encodes v and returns it as a text frame.
func JSON(v any) ([]byte, error) {
	p, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return Text(p), nil
}

// MustJSON is JSON for values that cannot fail to encode (the protocol's own frame types).
func MustJSON(v any) []byte {
	b, err := JSON(v)
	if err != nil {
		panic("frame: encoding a protocol frame: " + err.Error())
	}
	return b
}

// Close returns a close frame with a status code and a reason (truncated to fit the 125-byte
// control frame limit).
func Close(code uint16, reason string) []byte {
	if len(reason) > 123 {
		reason = reason[:123]
	}
	p := make([]byte, 2+len(reason))
	binary.BigEndian.PutUint16(p, code)
	copy(p[2:], reason)
	return Build(OpClose, p)
}

// Delivery envelopes. A delivery is: one byte n, n bytes naming the connection that must not
// get the frame (the one that produced the event, which has its ack instead; n = 0 for none),
// then the complete WebSocket frame. A control envelope, for the gateway itself rather than
// for clients, is the byte 0xFF and then its JSON payload.

const controlMark = 0xFF

// ErrBadDelivery is returned for an envelope that is too short to be one.
var ErrBadDelivery = errors.New("frame: malformed delivery envelope")

// Delivery encodes payload (one JSON object) as a text frame inside a delivery envelope that
// skips the connection exceptOrigin (may be ""; see chat.Event.Origin), in a single
// allocation.
func Delivery(exceptOrigin string, payload []byte) []byte {
	if len(exceptOrigin) >= controlMark {
		exceptOrigin = exceptOrigin[:controlMark-1] // origins are far shorter; never reached
	}
	h := headerLen(len(payload))
	b := make([]byte, 1+len(exceptOrigin)+h+len(payload))
	b[0] = byte(len(exceptOrigin))
	o := 1 + copy(b[1:], exceptOrigin)
	o += putHeader(b[o:], OpText, len(payload))
	copy(b[o:], payload)
	return b
}

// Control encodes a control envelope around payload.
func Control(payload []byte) []byte {
	return append([]byte{controlMark}, payload...)
}

// ParseDelivery splits an envelope into the excepted origin and the frame, or, for a
// control envelope, returns its payload as control. Frame and control alias data: they are
// shared, never modified.
func ParseDelivery(data []byte) (exceptOrigin string, wsFrame, control []byte, err error) {
	if len(data) >= 1 && data[0] == controlMark {
		return "", nil, data[1:], nil
	}
	if len(data) < 1 || len(data) < 1+int(data[0])+2 {
		return "", nil, nil, ErrBadDelivery
	}
	n := int(data[0])
	return string(data[1 : 1+n]), data[1+n:], nil, nil
}
