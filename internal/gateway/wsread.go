package gateway

import (
	"encoding/binary"
	"errors"
)

// Parsing of client frames from a byte buffer. The gateway reads whatever bytes a socket has
// without blocking and parses complete frames out of them; a partial frame stays in the
// connection's buffer until the rest arrives. This is what lets an idle connection hold no
// goroutine and no buffer.

const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xA
)

// header is a parsed client frame header.
type header struct {
	fin    bool
	rsv    byte
	op     byte
	masked bool
	mask   [4]byte
	length int64
	size   int // bytes of header
}

var (
	errNeedMore     = errors.New("need more bytes")
	errProtocol     = errors.New("websocket protocol error")
	errFrameTooLong = errors.New("frame length out of range")
)

// parseHeader parses a frame header at the start of b. errNeedMore means b holds only part
// of it.
func parseHeader(b []byte) (header, error) {
	if len(b) < 2 {
		return header{}, errNeedMore
	}
	h := header{
		fin:    b[0]&0x80 != 0,
		rsv:    (b[0] >> 4) & 0x7,
		op:     b[0] & 0x0F,
		masked: b[1]&0x80 != 0,
	}
	n := 2
	switch l := b[1] & 0x7F; l {
	case 126:
		if len(b) < 4 {
			return header{}, errNeedMore
		}
		h.length = int64(binary.BigEndian.Uint16(b[2:]))
		n = 4
	case 127:
		if len(b) < 10 {
			return header{}, errNeedMore
		}
		u := binary.BigEndian.Uint64(b[2:])
		if u > 1<<62 {
			return header{}, errFrameTooLong
		}
		h.length = int64(u)
		n = 10
	default:
		h.length = int64(l)
	}
	if h.masked {
		if len(b) < n+4 {
			return header{}, errNeedMore
		}
		copy(h.mask[:], b[n:n+4])
		n += 4
	}
	h.size = n
	if h.rsv != 0 {
		return h, errProtocol // no extension is negotiated
	}
	if h.op >= 0x8 && (!h.fin || h.length > 125) {
		return h, errProtocol // control frames are short and never fragmented
	}
	switch h.op {
	case opContinuation, opText, opBinary, opClose, opPing, opPong:
	default:
		return h, errProtocol
	}
	return h, nil
}
