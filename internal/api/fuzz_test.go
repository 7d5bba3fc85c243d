package api

import (
	"bytes"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/parley-chat/parley/internal/chat"
	"github.com/parley-chat/parley/protocol"
)

// FuzzDecodeBody: any request body decodes into each request type or is refused with
// bad_request or too_large, worded in the API's terms; nothing after the JSON object is
// accepted.
func FuzzDecodeBody(f *testing.F) {
	for _, s := range []string{
		`{"username":"alice","password":"correct horse"}`, `{"username":5}`, `{"a":1} {"b":2}`,
		`{"a":1}   `, `[]`, `null`, `{`, ``, `{"display_name":"\u202e"}`, `{"member_ids":[1]}`,
		`{"refresh_token":"` + strings.Repeat("x", 66<<10) + `"}`,
	} {
		f.Add([]byte(s))
	}
	targets := []struct {
		v     func() any
		limit int64
	}{
		{func() any { return new(protocol.SignupRequest) }, maxAuthBody},
		{func() any { return new(protocol.LoginRequest) }, maxAuthBody},
		{func() any { return new(protocol.RefreshRequest) }, maxAuthBody},
		{func() any { return new(protocol.PatchMeRequest) }, maxRequestBody},
		{func() any { return new(protocol.CreateConversationRequest) }, maxRequestBody},
		{func() any { return new(protocol.AddMembersRequest) }, maxRequestBody},
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if len(body) > maxAuthBody+1024 {
			t.Skip() // past the bounds nothing is decoded: the reader stops at the limit
		}
		for _, tc := range targets {
			r := httptest.NewRequest("POST", "/", bytes.NewReader(body))
			err := decodeBody(r, tc.v(), tc.limit)
			if err == nil {
				if int64(len(body)) > tc.limit {
					t.Fatalf("accepted a %d-byte body over the %d limit", len(body), tc.limit)
				}
				if trimmed := bytes.TrimSpace(body); len(trimmed) == 0 || trimmed[len(trimmed)-1] != '}' && !bytes.Equal(trimmed, []byte("null")) {
					t.Fatalf("accepted %q: not one JSON object", body)
				}
				continue
			}
			code, msg := chat.Code(err)
			if (code != protocol.CodeBadRequest && code != protocol.CodeTooLarge) || strings.Contains(msg, "Go ") || strings.Contains(msg, "protocol.") {
				t.Fatalf("refusal %q %q: want bad_request or too_large in the API's terms", code, msg)
			}
		}
	})
}
