package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gobwas/ws"
)

// lconn is the load generator's own lean WebSocket client: no reconnects, no resume, no
// per-request bookkeeping, so that at tens of thousands of messages a second the load
// generator is not what is measured. Correctness of the server under load is checked by
// the scenarios themselves (every acked message delivered once).
type lconn struct {
	nc  net.Conn
	br  *bufio.Reader
	wmu sync.Mutex
	buf []byte                 // JSON scratch, under wmu
	out bytes.Buffer           // frame scratch, under wmu
	hdr [ws.MaxHeaderSize]byte // header scratch, under wmu
}

// dialer makes lean connections for one server, spreading them over source addresses.
type dialer struct {
	wsURL   string
	sources []string
	n       int
	mu      sync.Mutex
}

func newDialer(baseURL string, sources []string) *dialer {
	return &dialer{wsURL: "ws" + strings.TrimPrefix(baseURL, "http") + "/api/v1/ws", sources: sources}
}

func (d *dialer) dial(ctx context.Context, token string) (*lconn, error) {
	wd := ws.Dialer{
		Timeout: 10 * time.Second,
		Header:  ws.HandshakeHeaderHTTP(http.Header{"Authorization": {"Bearer " + token}}),
	}
	if len(d.sources) > 0 {
		d.mu.Lock()
		src := d.sources[d.n%len(d.sources)]
		d.n++
		d.mu.Unlock()
		wd.NetDial = (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 10 * time.Second}).DialContext
	}
	nc, br, _, err := wd.Dial(ctx, d.wsURL)
	if err != nil {
		return nil, err
	}
	if br == nil {
		br = bufio.NewReaderSize(nc, 4096)
	}
	c := &lconn{nc: nc, br: br}
	// The ready frame, within the dial's timeout: a server that upgrades and then says
	// nothing must not hang the run.
	_ = nc.SetReadDeadline(time.Now().Add(wd.Timeout))
	if _, err := c.next(); err != nil {
		nc.Close()
		return nil, fmt.Errorf("waiting for ready: %w", err)
	}
	_ = nc.SetReadDeadline(time.Time{})
	return c, nil
}

// writeWithin sends one text frame (masked, as a client must) with a deadline, which it
// clears again so that it does not fall on a later write (a pong from the reader).
func (c *lconn) writeWithin(p []byte, d time.Duration) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.nc.SetWriteDeadline(time.Now().Add(d))
	defer c.nc.SetWriteDeadline(time.Time{})
	return c.writeFrame(ws.OpText, p)
}

// writeFrame writes one masked frame with a single system call. (wsutil's writers write
// the header and the payload separately: two system calls here, and two TCP segments that
// can each wake the server.) c.wmu is held.
func (c *lconn) writeFrame(op ws.OpCode, p []byte) error {
	c.out.Reset()
	writeClientFrame(&c.out, c.hdr[:], op, p)
	_, err := c.nc.Write(c.out.Bytes())
	return err
}

// writeClientFrame writes a final, masked frame carrying p to buf (RFC 6455 section 5.2),
// encoding the header with gobwas/ws into hdr (ws.MaxHeaderSize bytes).
func writeClientFrame(buf *bytes.Buffer, hdr []byte, op ws.OpCode, p []byte) {
	h := ws.Header{Fin: true, OpCode: op, Masked: true, Mask: ws.NewMask(), Length: int64(len(p))}
	_ = ws.WriteHeaderBuffer(buf, h, hdr) // fails only on a short hdr; a Buffer's Write cannot
	start := buf.Len()
	buf.Write(p)
	ws.Cipher(buf.Bytes()[start:], h.Mask, 0)
}

// send writes a send frame with the given id, conversation and body, without encoding JSON.
func (c *lconn) send(id, conv, body string) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.buf = append(c.buf[:0], `{"type":"send","id":"`...)
	c.buf = append(c.buf, id...)
	c.buf = append(c.buf, `","conversation_id":"`...)
	c.buf = append(c.buf, conv...)
	c.buf = append(c.buf, `","body":"`...)
	c.buf = append(c.buf, body...)
	c.buf = append(c.buf, `"}`...)
	return c.writeFrame(ws.OpText, c.buf)
}

// next returns the next text frame's payload, answering pings on the way.
func (c *lconn) next() ([]byte, error) {
	for {
		h, err := ws.ReadHeader(c.br)
		if err != nil {
			return nil, err
		}
		p := make([]byte, h.Length)
		if _, err := io.ReadFull(c.br, p); err != nil {
			return nil, err
		}
		switch h.OpCode {
		case ws.OpText:
			return p, nil
		case ws.OpPing:
			c.wmu.Lock()
			err := c.writeFrame(ws.OpPong, p)
			c.wmu.Unlock()
			if err != nil {
				return nil, err
			}
		case ws.OpClose:
			return nil, serverClose(p)
		}
	}
}

func (c *lconn) close() { c.nc.Close() }

// closedError is a close frame from the server: the connection was ended on purpose (a
// slow reader cut off, a shutdown), which a scenario reports instead of a lost message
// it cannot explain.
type closedError struct {
	code   uint16
	reason string
}

func (e *closedError) Error() string {
	return fmt.Sprintf("closed by server: %d %s", e.code, e.reason)
}

func serverClose(p []byte) error {
	code, reason := ws.ParseCloseFrameData(p)
	return &closedError{code: uint16(code), reason: reason}
}

// frameInfo is what the scenarios need from a server frame, found without a full decode.
type frameInfo struct {
	typ  string // "ack", "message", ...
	id   string
	conv string
	seq  int64
	body string
}

var (
	kType = []byte(`"type":"`)
	kID   = []byte(`"id":"`)
	kConv = []byte(`"conversation_id":"`)
	kSeq  = []byte(`"seq":`)
	kBody = []byte(`"body":"`)
)

// parse extracts the fields of a server frame. Parley encodes ack and message frames with
// these keys in a fixed order and no escapes in ids, seqs or the load generator's bodies;
// anything else falls back to encoding/json.
func parse(p []byte) frameInfo {
	var f frameInfo
	f.typ = str(p, kType)
	switch f.typ {
	case "ack", "message":
		f.id, f.conv, f.body = str(p, kID), str(p, kConv), str(p, kBody)
		if i := bytes.Index(p, kSeq); i >= 0 {
			j := i + len(kSeq)
			k := j
			for k < len(p) && p[k] >= '0' && p[k] <= '9' {
				k++
			}
			f.seq, _ = strconv.ParseInt(string(p[j:k]), 10, 64)
		}
		if f.id != "" && f.seq > 0 {
			return f
		}
	}
	var full struct {
		Type           string `json:"type"`
		ID             string `json:"id"`
		ConversationID string `json:"conversation_id"`
		Seq            int64  `json:"seq"`
		Body           string `json:"body"`
	}
	_ = json.Unmarshal(p, &full)
	return frameInfo{typ: full.Type, id: full.ID, conv: full.ConversationID, seq: full.Seq, body: full.Body}
}

func str(p, key []byte) string {
	i := bytes.Index(p, key)
	if i < 0 {
		return ""
	}
	j := i + len(key)
	k := bytes.IndexByte(p[j:], '"')
	if k < 0 {
		return ""
	}
	return string(p[j : j+k])
}
