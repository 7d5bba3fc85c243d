package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"

	"github.com/gobwas/ws"

	"github.com/parley-chat/parley/protocol"
)

func compile(t *testing.T, f ws.Frame) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := ws.WriteFrame(&b, f); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestParseHeader(t *testing.T) {
	mask := [4]byte{1, 2, 3, 4}
	masked := func(f ws.Frame) ws.Frame { return ws.MaskFrameWith(f, mask) }
	tests := []struct {
		name   string
		data   []byte
		err    error
		op     byte
		length int64
		fin    bool
	}{
		{"short text", compile(t, masked(ws.NewTextFrame([]byte("hi")))), nil, opText, 2, true},
		{"16-bit length", compile(t, masked(ws.NewTextFrame(make([]byte, 300)))), nil, opText, 300, true},
		{"64-bit length", compile(t, masked(ws.NewTextFrame(make([]byte, 70000)))), nil, opText, 70000, true},
		{"fragment", compile(t, masked(ws.NewFrame(ws.OpText, false, []byte("a")))), nil, opText, 1, false},
		{"ping", compile(t, masked(ws.NewPingFrame([]byte("p")))), nil, opPing, 1, true},
		{"one byte", []byte{0x81}, errNeedMore, 0, 0, false},
		{"mask cut", compile(t, masked(ws.NewTextFrame([]byte("hi"))))[:4], errNeedMore, 0, 0, false},
		{"16-bit length cut", compile(t, masked(ws.NewTextFrame(make([]byte, 300))))[:3], errNeedMore, 0, 0, false},
		{"reserved opcode", []byte{0x83, 0x80, 0, 0, 0, 0}, errProtocol, 0, 0, false},
		{"rsv bit set", []byte{0xC1, 0x80, 0, 0, 0, 0}, errProtocol, 0, 0, false},
		{"fragmented ping", []byte{0x09, 0x80, 0, 0, 0, 0}, errProtocol, 0, 0, false},
		{"long ping", []byte{0x89, 0xFE, 0, 200, 0, 0, 0, 0}, errProtocol, 0, 0, false},
		{"absurd length", []byte{0x81, 0xFF, 0xFF, 0, 0, 0, 0, 0, 0, 0}, errFrameTooLong, 0, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := parseHeader(tt.data)
			if !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if err != nil {
				return
			}
			if h.op != tt.op || h.length != tt.length || h.fin != tt.fin || !h.masked || h.mask != mask {
				t.Fatalf("header = %+v", h)
			}
			if got := int64(len(tt.data)) - int64(h.size); got != tt.length {
				t.Fatalf("size %d leaves %d payload bytes, want %d", h.size, got, tt.length)
			}
		})
	}
}

func FuzzParseHeader(f *testing.F) {
	f.Add([]byte{0x81, 0x82, 1, 2, 3, 4, 'h', 'i'})
	f.Add([]byte{0x81, 0xFE, 0x01, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := parseHeader(b)
		if err == nil && (h.size > len(b) || h.length < 0) {
			t.Fatalf("header %+v from %d bytes", h, len(b))
		}
	})
}

// BenchmarkDecodeSend is the read hot path of one client frame: header, unmask, JSON.
func BenchmarkDecodeSend(b *testing.B) {
	payload := []byte(`{"type":"send","id":"01936f0e-7c1a-7f00-8000-000000000001","conversation_id":"01936f0e-7c1a-7f00-8000-00000000beef","body":"hello there, how are you doing today?"}`)
	var buf bytes.Buffer
	_ = ws.WriteFrame(&buf, ws.MaskFrameWith(ws.NewTextFrame(payload), [4]byte{1, 2, 3, 4}))
	frame := buf.Bytes()
	work := make([]byte, len(frame))
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		copy(work, frame)
		h, err := parseHeader(work)
		if err != nil {
			b.Fatal(err)
		}
		p := work[h.size : h.size+int(h.length)]
		ws.Cipher(p, h.mask, 0)
		var f protocol.ClientFrame
		if err := json.Unmarshal(p, &f); err != nil {
			b.Fatal(err)
		}
	}
}
