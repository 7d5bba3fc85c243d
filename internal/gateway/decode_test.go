package gateway

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/parley-chat/parley/internal/chat"
	"github.com/parley-chat/parley/protocol"
)

// FuzzDecodeClientFrame: whatever a client sends as a text message, decoding it never
// panics; it is refused as not UTF-8 exactly when it is not; any other refusal is a
// bad_request worded in the protocol's terms (no Go type names); and what is accepted
// survives a round trip.
func FuzzDecodeClientFrame(f *testing.F) {
	for _, s := range []string{
		`{"type":"send","id":"0192f0a0-0000-7000-8000-000000000001","conversation_id":"c","body":"hi"}`,
		`{"type":"typing","conversation_id":"c","state":"start"}`,
		`{"type":"receipt","conversation_id":"c","status":"read","seq":3}`,
		`{"type":"send","body":5}`, `{"type":"send"} x`, `[1,2]`, `"str"`, `{`, "\xff\xfe", ``,
		`{"type":"react","target_seq":-1,"emoji":"` + strings.Repeat("🙂", 40) + `"}`,
		`{"type":"send","attachments":[{"url":"https://x"}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		fr, err := decodeClientFrame(p)
		if errors.Is(err, errNotUTF8) != !utf8.Valid(p) {
			t.Fatalf("errNotUTF8 = %v for input that is UTF-8: %v", errors.Is(err, errNotUTF8), utf8.Valid(p))
		}
		if err != nil {
			if errors.Is(err, errNotUTF8) {
				return
			}
			code, msg := chat.Code(err)
			if code != protocol.CodeBadRequest || strings.Contains(msg, "Go ") || strings.Contains(msg, "protocol.") {
				t.Fatalf("refusal %q %q: want bad_request in the protocol's terms", code, msg)
			}
			return
		}
		b, err := json.Marshal(fr)
		if err != nil {
			t.Fatalf("accepted frame does not encode: %v", err)
		}
		again, err := decodeClientFrame(b)
		if err != nil || again.Type != fr.Type || again.Body != fr.Body || again.ID != fr.ID {
			t.Fatalf("round trip: %+v → %s → %+v, %v", fr, b, again, err)
		}
	})
}
