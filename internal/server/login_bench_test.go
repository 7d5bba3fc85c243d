package server

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"sync"
	"testing"

	"github.com/parley-chat/parley/internal/auth"
	"github.com/parley-chat/parley/internal/limit"
)

// BenchmarkLoginUnderFlood times a real user's login (real argon2id cost) while 64 clients
// on another address flood the server with wrong passwords. With the per-address login
// limit the flood is answered 429 before any hashing and the user's login costs what it
// costs on an idle server; without it ("flood unlimited") the flood holds the hashing slots
// and the user waits behind it.
//
//	go test -run '^$' -bench LoginUnderFlood -benchtime 20x ./internal/server
func BenchmarkLoginUnderFlood(b *testing.B) {
	for _, bc := range []struct {
		name  string
		flood bool
		ip    limit.Rule
	}{
		{"idle", false, limit.Rule{}},
		{"flood limited", true, limit.Rule{}},
		{"flood unlimited", true, limit.Rule{Rate: 1e6, Burst: 1e6}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			cfg := Config{Listen: "127.0.0.1:0", Data: b.TempDir()}
			cfg.API.Password = auth.DefaultParams()
			cfg.Limits.LoginIP = bc.ip
			// The user logs in b.N times from one address: its own buckets are not what is
			// measured.
			cfg.Limits.LoginAccountIP = limit.Rule{Rate: 1e6, Burst: 1e6}
			cfg.Limits.LoginAccount = limit.Rule{Rate: 1e6, Burst: 1e6}
			s, err := New(context.Background(), cfg, slog.New(slog.DiscardHandler))
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- s.Run(ctx) }()
			defer func() { cancel(); <-done }()
			ts := &testServer{Server: s, addr: s.Addr(), base: "http://" + s.Addr()}
			user := fromAddr("127.0.0.3")
			if status, _, _ := ts.postB(b, user, "/api/v1/auth/signup", []byte(`{"username":"victim","password":"correct horse"}`)); status != 201 {
				b.Fatalf("signup: %d", status)
			}
			stop := make(chan struct{})
			var wg sync.WaitGroup
			if bc.flood {
				flooder := fromAddr("127.0.0.2")
				for range 64 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for {
							select {
							case <-stop:
								return
							default:
							}
							ts.postB(b, flooder, "/api/v1/auth/login", loginBody("victim", "wrong password"))
						}
					}()
				}
			}
			b.ResetTimer()
			for range b.N {
				if status, _, _ := ts.postB(b, user, "/api/v1/auth/login", loginBody("victim", "correct horse")); status != 200 {
					b.Fatalf("the user's login: %d", status)
				}
			}
			b.StopTimer()
			close(stop)
			wg.Wait()
		})
	}
}

// postB is post for a benchmark.
func (ts *testServer) postB(b *testing.B, c *http.Client, path string, body []byte) (int, http.Header, error) {
	req, err := http.NewRequest("POST", ts.base+path, bytes.NewReader(body))
	if err != nil {
		b.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header, nil
}
