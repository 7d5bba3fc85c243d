package server

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/parley-chat/parley/protocol"
)

func TestAccounts(t *testing.T) {
	ts := startServer(t, nil)
	signup := []struct {
		name     string
		req      protocol.SignupRequest
		status   int
		code     string
		contains string
	}{
		{"ok", protocol.SignupRequest{Username: "Alice", Password: "correct horse", DisplayName: "Alice A."}, 201, "", ""},
		{"taken, any case", protocol.SignupRequest{Username: "alice", Password: "correct horse"}, 409, protocol.CodeConflict, "taken"},
		{"short username", protocol.SignupRequest{Username: "al", Password: "correct horse"}, 400, protocol.CodeBadRequest, "username"},
		{"bad characters", protocol.SignupRequest{Username: "al ice!", Password: "correct horse"}, 400, protocol.CodeBadRequest, "username"},
		{"short password", protocol.SignupRequest{Username: "bob", Password: "short"}, 400, protocol.CodeBadRequest, "password"},
	}
	for _, tt := range signup {
		t.Run("signup "+tt.name, func(t *testing.T) {
			var body struct {
				protocol.UserBody
				protocol.ErrorBody
			}
			status := ts.call("POST", "/api/v1/auth/signup", "", tt.req, &body)
			if status != tt.status || body.Error.Code != tt.code {
				t.Fatalf("status %d code %q, want %d %q (%s)", status, body.Error.Code, tt.status, tt.code, body.Error.Message)
			}
			if !strings.Contains(strings.ToLower(body.Error.Message), tt.contains) {
				t.Errorf("message %q does not mention %q", body.Error.Message, tt.contains)
			}
			if status == 201 && (body.User.Username != "alice" || body.User.DisplayName != "Alice A." || body.User.ID == "") {
				t.Errorf("user = %+v", body.User)
			}
		})
	}

	var bad protocol.ErrorBody
	if status := ts.call("POST", "/api/v1/auth/login", "", protocol.LoginRequest{Username: "alice", Password: "wrong password"}, &bad); status != 401 || bad.Error.Code != protocol.CodeUnauthorized {
		t.Fatalf("wrong password: %d %+v", status, bad)
	}
	if status := ts.call("POST", "/api/v1/auth/login", "", protocol.LoginRequest{Username: "nobody", Password: "wrong password"}, &bad); status != 401 {
		t.Fatalf("unknown user: %d", status)
	}

	dev1, dev2 := ts.login("alice"), ts.login("ALICE")
	if dev1.DeviceID == dev2.DeviceID || dev1.UserID != dev2.UserID {
		t.Fatalf("two logins: devices %s %s users %s %s", dev1.DeviceID, dev2.DeviceID, dev1.UserID, dev2.UserID)
	}

	// Refresh rotates: the new pair works, the old refresh token does not.
	var fresh protocol.Tokens
	if status := ts.call("POST", "/api/v1/auth/refresh", "", protocol.RefreshRequest{RefreshToken: dev1.RefreshToken}, &fresh); status != 200 {
		t.Fatalf("refresh: %d", status)
	}
	if fresh.RefreshToken == dev1.RefreshToken || fresh.DeviceID != dev1.DeviceID {
		t.Fatalf("refresh answer %+v", fresh)
	}
	// (Presenting the old one again would log the device out: TestRefreshReuseLogsDeviceOut.)
	var me protocol.UserBody
	if status := ts.call("GET", "/api/v1/me", fresh.AccessToken, nil, &me); status != 200 || me.User.ID != dev1.UserID {
		t.Fatalf("me with refreshed token: %d %+v", status, me)
	}

	// Logout revokes only that device.
	if status := ts.call("POST", "/api/v1/auth/logout", fresh.AccessToken, nil, nil); status != 204 {
		t.Fatalf("logout: %d", status)
	}
	if status := ts.call("GET", "/api/v1/me", fresh.AccessToken, nil, nil); status != 401 {
		t.Fatalf("me after logout: %d", status)
	}
	if status := ts.call("POST", "/api/v1/auth/refresh", "", protocol.RefreshRequest{RefreshToken: fresh.RefreshToken}, nil); status != 401 {
		t.Fatalf("refresh after logout: %d", status)
	}
	if status := ts.call("GET", "/api/v1/me", dev2.AccessToken, nil, nil); status != 200 {
		t.Fatalf("other device after logout: %d", status)
	}

	// Profile, lookup, search, contacts.
	name := "Alice Cooper"
	if status := ts.call("PATCH", "/api/v1/me", dev2.AccessToken, protocol.PatchMeRequest{DisplayName: &name}, &me); status != 200 || me.User.DisplayName != name {
		t.Fatalf("patch me: %d %+v", status, me)
	}
	bob := ts.signup("bob")
	ts.signup("bobby")
	var users protocol.UsersBody
	if status := ts.call("GET", "/api/v1/users?prefix=bo", dev2.AccessToken, nil, &users); status != 200 || len(users.Users) != 2 || users.Users[0].Username != "bob" {
		t.Fatalf("search: %d %+v", status, users)
	}
	var one protocol.UserBody
	if status := ts.call("GET", "/api/v1/users/"+bob.UserID, dev2.AccessToken, nil, &one); status != 200 || one.User.Username != "bob" {
		t.Fatalf("user by id: %d %+v", status, one)
	}
	if status := ts.call("GET", "/api/v1/users/nope", dev2.AccessToken, nil, nil); status != 404 {
		t.Fatalf("missing user: %d", status)
	}
	if status := ts.call("PUT", "/api/v1/contacts/"+bob.UserID, dev2.AccessToken, nil, nil); status != 204 {
		t.Fatalf("put contact: %d", status)
	}
	if status := ts.call("PUT", "/api/v1/contacts/nope", dev2.AccessToken, nil, nil); status != 404 {
		t.Fatalf("put missing contact: %d", status)
	}
	if status := ts.call("GET", "/api/v1/contacts", dev2.AccessToken, nil, &users); status != 200 || len(users.Users) != 1 || users.Users[0].ID != bob.UserID {
		t.Fatalf("contacts: %d %+v", status, users)
	}
	if status := ts.call("DELETE", "/api/v1/contacts/"+bob.UserID, dev2.AccessToken, nil, nil); status != 204 {
		t.Fatalf("delete contact: %d", status)
	}
	if ts.call("GET", "/api/v1/contacts", dev2.AccessToken, nil, &users); len(users.Users) != 0 {
		t.Fatalf("contacts after delete: %+v", users)
	}
}

// TestDirectOnePerPair: both users creating their direct conversation at the same moment,
// many times over, get one conversation.
func TestDirectOnePerPair(t *testing.T) {
	ts := startServer(t, nil)
	alice, bob := ts.signup("alice"), ts.signup("bob")
	ids := make([]string, 20)
	created := make([]int, 20)
	var wg sync.WaitGroup
	for i := range ids {
		wg.Go(func() {
			a, b := alice, bob
			if i%2 == 1 {
				a, b = bob, alice
			}
			var body protocol.ConversationBody
			created[i] = ts.call("POST", "/api/v1/conversations", a.AccessToken, protocol.CreateConversationRequest{Type: protocol.Direct, MemberIDs: []string{b.UserID}}, &body)
			ids[i] = body.Conversation.ID
		})
	}
	wg.Wait()
	n201 := 0
	for i := range ids {
		if ids[i] != ids[0] || ids[i] == "" {
			t.Fatalf("conversation ids differ: %v", ids)
		}
		if created[i] == 201 {
			n201++
		}
	}
	if n201 != 1 {
		t.Fatalf("%d answers were 201 Created, want exactly 1 (statuses %v)", n201, created)
	}
	var self protocol.ErrorBody
	if status := ts.call("POST", "/api/v1/conversations", alice.AccessToken, protocol.CreateConversationRequest{Type: protocol.Direct, MemberIDs: []string{alice.UserID}}, &self); status != 400 {
		t.Fatalf("direct with self: %d", status)
	}
}

func TestGroups(t *testing.T) {
	const limit = 5
	ts := startServer(t, func(c *Config) { c.Chat.MaxGroupMembers = limit })
	accts := make([]account, 7)
	for i := range accts {
		accts[i] = ts.signup(fmt.Sprintf("user%d", i))
	}
	owner, m1, m2, outsider := accts[0], accts[1], accts[2], accts[6]
	g := ts.group(owner, "team", m1, m2)
	if g.Type != protocol.Group || g.Name != "team" || len(g.Members) != 3 || g.LastSeq != 1 {
		t.Fatalf("group = %+v", g)
	}
	roles := map[string]string{}
	for _, m := range g.Members {
		roles[m.UserID] = m.Role
	}
	if roles[owner.UserID] != protocol.RoleAdmin || roles[m1.UserID] != protocol.RoleMember {
		t.Fatalf("roles = %v", roles)
	}

	path := "/api/v1/conversations/" + g.ID
	syncOf := func(a account, since string) protocol.SyncBody {
		t.Helper()
		var sb protocol.SyncBody
		if status := ts.call("GET", "/api/v1/sync?since="+since, a.AccessToken, nil, &sb); status != 200 {
			t.Fatalf("sync: %d", status)
		}
		return sb
	}
	m1Since, m2Since := syncOf(m1, "").NextSince, syncOf(m2, "").NextSince
	steps := []struct {
		name   string
		who    account
		method string
		path   string
		body   any
		status int
	}{
		{"outsider cannot see it", outsider, "GET", path, nil, 404},
		{"member cannot rename", m1, "PATCH", path, map[string]string{"name": "mine"}, 403},
		{"admin renames", owner, "PATCH", path, map[string]string{"name": "team two"}, 200},
		{"empty name refused", owner, "PATCH", path, map[string]string{"name": " "}, 400},
		{"member cannot add", m1, "POST", path + "/members", protocol.AddMembersRequest{UserIDs: []string{accts[3].UserID}}, 403},
		{"admin adds two", owner, "POST", path + "/members", protocol.AddMembersRequest{UserIDs: []string{accts[3].UserID, accts[4].UserID}}, 200},
		{"adding past the limit", owner, "POST", path + "/members", protocol.AddMembersRequest{UserIDs: []string{accts[5].UserID}}, 413},
		{"adding a member again", owner, "POST", path + "/members", protocol.AddMembersRequest{UserIDs: []string{m1.UserID}}, 409},
		{"adding nobody real", owner, "POST", path + "/members", protocol.AddMembersRequest{UserIDs: []string{"ghost"}}, 404},
		{"member cannot remove another", m1, "DELETE", path + "/members/" + m2.UserID, nil, 403},
		{"admin removes", owner, "DELETE", path + "/members/" + accts[4].UserID, nil, 204},
		{"removed member cannot see it", accts[4], "GET", path, nil, 404},
		{"member leaves", m2, "DELETE", path + "/members/" + m2.UserID, nil, 204},
		{"outsider cannot leave", outsider, "DELETE", path + "/members/" + outsider.UserID, nil, 404},
		{"last admin leaves", owner, "DELETE", path + "/members/" + owner.UserID, nil, 204},
	}
	for _, s := range steps {
		var body protocol.ErrorBody
		status := ts.call(s.method, s.path, s.who.AccessToken, s.body, &body)
		if status != s.status {
			t.Fatalf("%s: status %d, want %d (%s)", s.name, status, s.status, body.Error.Message)
		}
		if status >= 400 && body.Error.Message == "" {
			t.Errorf("%s: error without a message", s.name)
		}
	}

	// A sync tells the member who left (as it would one removed) to drop the conversation,
	// and tells those still in it nothing of the kind.
	if sb := syncOf(m2, m2Since); !slices.Equal(sb.RemovedConversationIDs, []string{g.ID}) || len(sb.Conversations) != 0 {
		t.Errorf("sync of the member who left: removed %v, conversations %d; want [%s], 0", sb.RemovedConversationIDs, len(sb.Conversations), g.ID)
	}
	if sb := syncOf(m1, m1Since); len(sb.RemovedConversationIDs) != 0 || len(sb.Conversations) != 1 {
		t.Errorf("sync of a remaining member: removed %v, conversations %d; want none, 1", sb.RemovedConversationIDs, len(sb.Conversations))
	}
	if sb := syncOf(m2, ""); sb.RemovedConversationIDs != nil {
		t.Errorf("first sync reports removals %v; want none", sb.RemovedConversationIDs)
	}

	// The oldest remaining member became admin; every change is a system event with its own seq.
	var cb protocol.ConversationBody
	if status := ts.call("GET", path, m1.AccessToken, nil, &cb); status != 200 {
		t.Fatalf("get: %d", status)
	}
	if cb.Conversation.Name != "team two" || len(cb.Conversation.Members) != 2 {
		t.Fatalf("after changes: %+v", cb.Conversation)
	}
	for _, m := range cb.Conversation.Members {
		if m.UserID == m1.UserID && m.Role != protocol.RoleAdmin {
			t.Fatalf("m1 should be admin now: %+v", cb.Conversation.Members)
		}
	}
	hist := ts.history(m1, g.ID, 0)
	want := []string{protocol.SysCreated, protocol.SysRenamed, protocol.SysMembersAdded, protocol.SysMemberRemoved, protocol.SysMemberLeft, protocol.SysMemberLeft}
	if len(hist) != len(want) {
		t.Fatalf("history has %d events, want %d: %+v", len(hist), len(want), hist)
	}
	for i, m := range hist {
		if m.Seq != int64(i+1) || m.Kind != protocol.KindSystem || m.System == nil || m.System.Action != want[i] {
			t.Errorf("event %d = seq %d kind %s system %+v, want seq %d %s", i, m.Seq, m.Kind, m.System, i+1, want[i])
		}
	}

	// Creating a group larger than the limit fails with a clear error.
	ids := []string{}
	for _, a := range accts[1:] {
		ids = append(ids, a.UserID)
	}
	var eb protocol.ErrorBody
	if status := ts.call("POST", "/api/v1/conversations", owner.AccessToken, protocol.CreateConversationRequest{Type: protocol.Group, Name: "big", MemberIDs: ids}, &eb); status != 413 || !strings.Contains(eb.Error.Message, "5") {
		t.Fatalf("oversized group: %d %+v", status, eb)
	}
	if status := ts.call("GET", "/api/v1/conversations?limit=abc", owner.AccessToken, nil, nil); status != http.StatusBadRequest {
		t.Fatalf("bad limit: %d", status)
	}
}

// TestSyncPages: /sync answers at most limit conversations, says has_more until the last
// page, and the pages together hold every conversation once.
func TestSyncPages(t *testing.T) {
	ts := startServer(t, nil)
	alice, bob := ts.signup("alice"), ts.signup("bob")
	want := map[string]bool{}
	for i := range 5 {
		want[ts.group(alice, fmt.Sprint("g", i), bob).ID] = true
	}
	got := map[string]bool{}
	since, pages := "", 0
	for {
		var body protocol.SyncBody
		path := "/api/v1/sync?limit=2"
		if since != "" {
			path += "&since=" + url.QueryEscape(since)
		}
		if code := ts.call("GET", path, alice.AccessToken, nil, &body); code != 200 {
			t.Fatalf("sync page %d: %d", pages, code)
		}
		pages++
		if len(body.Conversations) > 2 {
			t.Fatalf("page %d holds %d conversations, limit 2", pages, len(body.Conversations))
		}
		for _, c := range body.Conversations {
			got[c.ID] = true
		}
		since = body.NextSince
		if !body.HasMore {
			break
		}
	}
	if pages != 3 || len(got) != len(want) {
		t.Fatalf("%d pages holding %d conversations; want 3 pages and all %d", pages, len(got), len(want))
	}
	var body protocol.SyncBody
	if code := ts.call("GET", "/api/v1/sync?since="+url.QueryEscape(since), alice.AccessToken, nil, &body); code != 200 || len(body.Conversations) != 0 || body.HasMore {
		t.Fatalf("sync after the last page: %d %+v; want nothing more", code, body)
	}
}
