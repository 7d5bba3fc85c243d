package loadgen

import (
	"bytes"
	"io"
	"testing"

	"github.com/gobwas/ws"
)

// TestWriteClientFrame: a frame built in one buffer reads back, through gobwas/ws's own
// reader, as one final masked frame with the payload intact, at every length encoding.
func TestWriteClientFrame(t *testing.T) {
	for _, tc := range []struct {
		op ws.OpCode
		n  int
	}{
		{ws.OpText, 0}, {ws.OpText, 1}, {ws.OpText, 125}, {ws.OpText, 126},
		{ws.OpText, 0xffff}, {ws.OpText, 0x10000}, {ws.OpPong, 4},
	} {
		p := make([]byte, tc.n)
		for i := range p {
			p[i] = byte(i*7 + 3)
		}
		prefix := []byte("kept")
		buf := bytes.NewBuffer(append([]byte(nil), prefix...))
		var hdr [ws.MaxHeaderSize]byte
		writeClientFrame(buf, hdr[:], tc.op, p)
		b := buf.Bytes()
		if !bytes.HasPrefix(b, prefix) {
			t.Fatalf("n=%d: the bytes before the frame changed", tc.n)
		}
		r := bytes.NewReader(b[len(prefix):])
		h, err := ws.ReadHeader(r)
		if err != nil {
			t.Fatalf("n=%d: header: %v", tc.n, err)
		}
		if !h.Fin || !h.Masked || h.OpCode != tc.op || h.Length != int64(tc.n) {
			t.Fatalf("n=%d: header %+v", tc.n, h)
		}
		got, _ := io.ReadAll(r)
		ws.Cipher(got, h.Mask, 0)
		if !bytes.Equal(got, p) {
			t.Fatalf("n=%d: payload differs after unmasking", tc.n)
		}
	}
}
