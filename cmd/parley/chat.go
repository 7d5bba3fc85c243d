package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/parley-chat/parley/client"
	"github.com/parley-chat/parley/protocol"
)

const chatUsage = `usage: parley chat [--url URL] [--session FILE] <command> [args]

commands:
  signup <username> <password> [display name]
  login <username> <password>         log in and save the session (a new device)
  logout                              log this device out
  whoami
  users <prefix>                      find users by username prefix
  direct <username>                   print the id of the direct conversation with a user
  group <name> <username>...          create a group; prints its id
  add <conversation> <username>...    add members to a group
  remove <conversation> <username>    remove a member (yourself: leave)
  convs                               list your conversations
  send <conversation> <text>...       send a message; prints its seq once stored
  history <conversation> [limit]      print the newest messages
  listen                              print events as they arrive, until Ctrl-C

The session (tokens) is kept in --session (default .parley-session.json), so two people on
one machine use two files: PARLEY_SESSION=bob.json parley chat ...
`

// session is what `parley chat login` keeps between commands.
type session struct {
	URL    string          `json:"url"`
	Tokens protocol.Tokens `json:"tokens"`
}

func chatCmd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("chat", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(os.Stderr, chatUsage) }
	url := fs.String("url", "http://127.0.0.1:8080", "server URL")
	path := fs.String("session", ".parley-session.json", "file that keeps the login between commands")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return flag.ErrHelp
	}
	cmd, rest := fs.Arg(0), fs.Args()[1:]
	if cmd != "listen" { // listen runs until Ctrl-C cancels ctx
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
	}
	s := &chatSession{url: *url, path: *path, out: os.Stdout}
	return s.run(ctx, cmd, rest)
}

type chatSession struct {
	url, path string
	out       io.Writer
	cl        *client.Client
	names     map[string]string // user id → username
}

func (s *chatSession) client(loggedIn bool) (*client.Client, error) {
	var saved session
	if data, err := os.ReadFile(s.path); err == nil {
		if err := json.Unmarshal(data, &saved); err != nil {
			return nil, fmt.Errorf("session file %s: %w", s.path, err)
		}
	}
	url := s.url
	if saved.URL != "" && url == "http://127.0.0.1:8080" {
		url = saved.URL
	}
	s.cl = client.New(url, client.WithTokenHook(func(t protocol.Tokens) {
		s.save(session{URL: url, Tokens: t})
	}))
	if loggedIn {
		if saved.Tokens.RefreshToken == "" {
			return nil, fmt.Errorf("not logged in (no session in %s): run parley chat login", s.path)
		}
		s.cl.SetTokens(saved.Tokens)
	}
	return s.cl, nil
}

func (s *chatSession) save(v session) {
	data, _ := json.MarshalIndent(v, "", "  ")
	if err := os.WriteFile(s.path, data, 0o600); err != nil {
		fmt.Fprintln(os.Stderr, "parley: saving session:", err)
	}
}

func (s *chatSession) run(ctx context.Context, cmd string, args []string) error {
	need := func(n int, what string) error {
		if len(args) < n {
			return fmt.Errorf("usage: parley chat %s %s", cmd, what)
		}
		return nil
	}
	switch cmd {
	case "signup":
		if err := need(2, "<username> <password> [display name]"); err != nil {
			return err
		}
		cl, _ := s.client(false)
		u, err := cl.Signup(ctx, args[0], args[1], strings.Join(args[2:], " "))
		if err != nil {
			return err
		}
		fmt.Fprintf(s.out, "signed up %s (%s)\n", u.Username, u.ID)
		return nil
	case "login":
		if err := need(2, "<username> <password>"); err != nil {
			return err
		}
		cl, _ := s.client(false)
		host, _ := os.Hostname()
		t, err := cl.Login(ctx, args[0], args[1], "parley chat on "+host)
		if err != nil {
			return err
		}
		fmt.Fprintf(s.out, "logged in as %s (device %s); session saved in %s\n", args[0], t.DeviceID, s.path)
		return nil
	case "help":
		fmt.Fprint(os.Stderr, chatUsage)
		return nil
	}
	cl, err := s.client(true)
	if err != nil {
		return err
	}
	switch cmd {
	case "logout":
		if err := cl.Logout(ctx); err != nil {
			return err
		}
		return os.Remove(s.path)
	case "whoami":
		u, err := cl.Me(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(s.out, "%s (%s) %s\n", u.Username, u.DisplayName, u.ID)
	case "users":
		prefix := ""
		if len(args) > 0 {
			prefix = args[0]
		}
		users, err := cl.SearchUsers(ctx, prefix)
		if err != nil {
			return err
		}
		for _, u := range users {
			fmt.Fprintf(s.out, "%-20s %-24s %s\n", u.Username, u.DisplayName, u.ID)
		}
	case "direct":
		if err := need(1, "<username>"); err != nil {
			return err
		}
		id, err := s.userID(ctx, args[0])
		if err != nil {
			return err
		}
		c, _, err := cl.CreateDirect(ctx, id)
		if err != nil {
			return err
		}
		fmt.Fprintln(s.out, c.ID)
	case "group":
		if err := need(1, "<name> <username>..."); err != nil {
			return err
		}
		ids, err := s.userIDs(ctx, args[1:])
		if err != nil {
			return err
		}
		c, err := cl.CreateGroup(ctx, args[0], ids)
		if err != nil {
			return err
		}
		fmt.Fprintln(s.out, c.ID)
	case "add":
		if err := need(2, "<conversation> <username>..."); err != nil {
			return err
		}
		ids, err := s.userIDs(ctx, args[1:])
		if err != nil {
			return err
		}
		return cl.AddMembers(ctx, args[0], ids)
	case "remove":
		if err := need(2, "<conversation> <username>"); err != nil {
			return err
		}
		id, err := s.userID(ctx, args[1])
		if err != nil {
			return err
		}
		return cl.RemoveMember(ctx, args[0], id)
	case "convs":
		page, err := cl.Conversations(ctx, "", 200)
		if err != nil {
			return err
		}
		for _, c := range page.Conversations {
			fmt.Fprintf(s.out, "%s  %-6s %-24s last_seq %-5d unread %-4d %s\n", c.ID, c.Type, s.title(ctx, c), c.LastSeq, c.UnreadCount, s.preview(ctx, c.LastMessage))
		}
	case "send":
		if err := need(2, "<conversation> <text>..."); err != nil {
			return err
		}
		conn, err := cl.Connect(ctx)
		if err != nil {
			return err
		}
		defer conn.Close()
		ack, err := conn.Send(ctx, args[0], strings.Join(args[1:], " "))
		if err != nil {
			return err
		}
		fmt.Fprintf(s.out, "stored as seq %d\n", ack.Seq)
	case "history":
		if err := need(1, "<conversation> [limit]"); err != nil {
			return err
		}
		limit := 20
		if len(args) > 1 {
			if _, err := fmt.Sscan(args[1], &limit); err != nil {
				return fmt.Errorf("limit %q: %w", args[1], err)
			}
		}
		page, err := cl.Messages(ctx, args[0], 0, -1, limit)
		if err != nil {
			return err
		}
		for _, m := range page.Messages {
			s.printMessage(ctx, m)
		}
	case "listen":
		conn, err := cl.Connect(ctx)
		if err != nil {
			return err
		}
		defer conn.Close()
		fmt.Fprintf(os.Stderr, "listening as %s; Ctrl-C to stop\n", conn.Ready().UserID)
		for {
			select {
			case <-ctx.Done():
				return nil
			case ev, ok := <-conn.Events():
				if !ok {
					return conn.Err()
				}
				s.printEvent(ctx, ev)
			}
		}
	default:
		return fmt.Errorf("unknown chat command %q (see parley chat help)", cmd)
	}
	return nil
}

func (s *chatSession) userID(ctx context.Context, username string) (string, error) {
	users, err := s.cl.SearchUsers(ctx, username)
	if err != nil {
		return "", err
	}
	for _, u := range users {
		if u.Username == strings.ToLower(username) {
			return u.ID, nil
		}
	}
	return "", fmt.Errorf("no user named %q", username)
}

func (s *chatSession) userIDs(ctx context.Context, names []string) ([]string, error) {
	var ids []string
	for _, n := range names {
		id, err := s.userID(ctx, n)
		if err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, nil
}

func (s *chatSession) username(ctx context.Context, id string) string {
	if s.names == nil {
		s.names = map[string]string{}
	}
	if n, ok := s.names[id]; ok {
		return n
	}
	n := id
	if u, err := s.cl.User(ctx, id); err == nil {
		n = u.Username
	}
	s.names[id] = n
	return n
}

func (s *chatSession) title(ctx context.Context, c protocol.Conversation) string {
	if c.Type == protocol.Group {
		return c.Name
	}
	me := s.cl.Tokens().UserID
	for _, m := range c.Members {
		if m.UserID != me {
			return "@" + s.username(ctx, m.UserID)
		}
	}
	return "(direct)"
}

func (s *chatSession) preview(ctx context.Context, m *protocol.Message) string {
	if m == nil {
		return ""
	}
	b := m.Body
	if len(b) > 40 {
		b = b[:40] + "…"
	}
	return s.username(ctx, m.SenderID) + ": " + b
}

func (s *chatSession) printMessage(ctx context.Context, m protocol.Message) {
	t := time.UnixMilli(m.TS).Format("15:04:05")
	who := s.username(ctx, m.SenderID)
	switch m.Kind {
	case protocol.KindSystem:
		if m.System != nil {
			names := make([]string, len(m.System.UserIDs))
			for i, id := range m.System.UserIDs {
				names[i] = s.username(ctx, id)
			}
			fmt.Fprintf(s.out, "%s #%d  * %s %s %s%s\n", t, m.Seq, who, m.System.Action, strings.Join(names, ", "), m.System.Name)
		}
	case protocol.KindText:
		body := m.Body
		if m.Deleted {
			body = "(deleted)"
		} else if m.EditedTS != 0 {
			body += " (edited)"
		}
		fmt.Fprintf(s.out, "%s #%d  %s: %s\n", t, m.Seq, who, body)
	default:
		fmt.Fprintf(s.out, "%s #%d  %s %s #%d %s\n", t, m.Seq, who, m.Kind, m.TargetSeq, m.Body+m.Emoji)
	}
}

func (s *chatSession) printEvent(ctx context.Context, ev client.Event) {
	switch ev.Type {
	case client.EventMessage:
		fmt.Fprintf(s.out, "[%s] ", short(ev.Message.ConversationID))
		s.printMessage(ctx, *ev.Message)
	case client.EventReceipt:
		fmt.Fprintf(s.out, "[%s] %s %s up to #%d\n", short(ev.Receipt.ConversationID), s.username(ctx, ev.Receipt.UserID), ev.Receipt.Status, ev.Receipt.Seq)
	case client.EventTyping:
		fmt.Fprintf(s.out, "[%s] %s typing: %s\n", short(ev.Typing.ConversationID), s.username(ctx, ev.Typing.UserID), ev.Typing.State)
	case client.EventError:
		fmt.Fprintf(s.out, "error: %s: %s\n", ev.Error.Code, ev.Error.Message)
	}
}

func short(id string) string {
	if len(id) > 8 {
		return id[len(id)-8:]
	}
	return id
}
