package chat

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/parley-chat/parley/protocol"
)

// FuzzValidateSend: a send is accepted only if what would be stored is sane: UTF-8, within
// the size limit, no NUL, not only white space unless it has attachments, and attachments
// that are at most 10 media ids. Refusals are client errors, never internal.
func FuzzValidateSend(f *testing.F) {
	id := uuid.NewString()
	f.Add(id, "hello", []byte(nil))
	f.Add(id, " \t\n", []byte(nil))
	f.Add(id, "a\x00b", []byte(nil))
	f.Add(id, "", []byte(`["`+uuid.NewString()+`"]`))
	f.Add(id, "x", []byte(`["https://evil.example/a.png"]`))
	f.Add(id, "x", []byte(`[{"id":1}]`))
	f.Add("not-a-uuid", "x", []byte(`null`))
	s := &Service{cfg: Config{}.withDefaults()}
	f.Fuzz(func(t *testing.T, id, body string, attachments []byte) {
		ev := Event{Kind: protocol.KindText, ID: id, ConversationID: "c", SenderID: "u", Body: body, Attachments: attachments}
		err := s.validate(t.Context(), &ev)
		if err != nil {
			if code, _ := Code(err); code != protocol.CodeBadRequest && code != protocol.CodeTooLarge {
				t.Fatalf("refused with %q: %v", code, err)
			}
			return
		}
		if !utf8.ValidString(body) || strings.IndexByte(body, 0) >= 0 || len(body) > s.cfg.MaxBodyBytes {
			t.Fatalf("accepted body %q", body)
		}
		var ids []string
		if len(ev.Attachments) > 0 {
			if err := json.Unmarshal(ev.Attachments, &ids); err != nil || len(ids) > maxAttachments {
				t.Fatalf("accepted attachments %s", ev.Attachments)
			}
			for _, a := range ids {
				if _, err := uuid.Parse(a); err != nil || strings.Contains(a, ":") {
					t.Fatalf("accepted attachment id %q", a)
				}
			}
		}
		if len(ids) == 0 && strings.TrimSpace(body) == "" {
			t.Fatalf("accepted an empty message: body %q attachments %s", body, ev.Attachments)
		}
	})
}
