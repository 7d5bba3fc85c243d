package gateway

import (
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parley-chat/parley/internal/bus"
	"github.com/parley-chat/parley/internal/frame"
)

// BenchmarkFanout is the gateway's half of a group fan-out: one event's delivery envelope,
// encoded once, handed to deliver for each of 100 members (as the bus does, one subject per
// member) and written to each member's socket. An op is one event; the clock runs until
// every byte has reached the other ends of the 127.0.0.1 sockets (b.N loop, not b.Loop,
// which would stop it before the wait).
func BenchmarkFanout(b *testing.B) {
	const members = 100
	// Queues as deep as need be: the loop outruns the writers, and a cut connection would
	// stall the benchmark. What is measured is the throughput.
	g := &Gateway{
		cfg:    Config{SendQueueBytes: 1 << 30}.withDefaults(),
		log:    slog.New(slog.DiscardHandler),
		origin: "benchnode.",
		users:  make(map[string]*userConns),
		conns:  make(map[uint64]*Conn),
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	var received atomic.Int64
	subjects := make([]string, members)
	for i := range members {
		cc, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		sc, err := ln.Accept()
		if err != nil {
			b.Fatal(err)
		}
		defer cc.Close()
		defer sc.Close()
		go func() { _, _ = io.Copy(counter{&received}, cc) }()
		user := "user-" + strconv.Itoa(i)
		c := &Conn{g: g, id: uint64(i + 1), nc: sc, userID: user}
		g.users[user] = &userConns{conns: []*Conn{c}}
		g.conns[c.id] = c
		subjects[i] = bus.UserSubject(user)
	}
	// A message event of typical size, produced by a connection of another node.
	payload := []byte(`{"type":"message","conversation_id":"01936f0e-7c1a-7f00-8000-00000000beef","seq":123456,` +
		`"id":"01936f0e-7c1a-7f00-8000-000000000001","sender_id":"01936f0e-7c1a-7f00-8000-0000000000aa",` +
		`"body":"hello there, how are you doing today?","created_at":"2026-11-23T06:00:00.000Z"}`)
	data := frame.Delivery("othernode.42", payload)
	_, f, _, _ := frame.ParseDelivery(data)

	b.ReportAllocs()
	b.SetBytes(int64(len(f) * members))
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		for _, s := range subjects {
			g.deliver(s, data)
		}
	}
	want := int64(b.N) * int64(len(f)) * members
	for received.Load() < want {
		if time.Since(start) > time.Minute {
			b.Fatalf("%d of %d bytes arrived", received.Load(), want)
		}
		time.Sleep(100 * time.Microsecond)
	}
	b.ReportMetric(float64(b.N*members)/time.Since(start).Seconds(), "deliveries/s")
}

// counter counts the bytes written to it.
type counter struct{ n *atomic.Int64 }

func (c counter) Write(p []byte) (int, error) {
	c.n.Add(int64(len(p)))
	return len(p), nil
}
