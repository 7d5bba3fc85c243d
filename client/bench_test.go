package client

import (
	"context"
	"testing"
)

// BenchmarkSend measures one Send round trip (encode, write, ack, own event) against the
// fake server over a real socket; the fake server's own costs are included.
func BenchmarkSend(b *testing.B) {
	f := newFake(b)
	f.addConv("c1")
	cl := newTestClient(f)
	c, err := cl.Connect(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	go func() { // drain the own-message events
		for range c.Events() {
		}
	}()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Send(ctx, "c1", "hello, this is a typical short chat message"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReceive measures delivering one live message event: read, decode, dedup, emit.
func BenchmarkReceive(b *testing.B) {
	f := newFake(b)
	f.addConv("c1")
	cl := newTestClient(f)
	c, err := cl.Connect(context.Background(), WithEventBuffer(1024))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	b.ReportAllocs()
	go func() {
		for range b.N {
			f.post("c1")
		}
	}()
	for range b.N {
		<-c.Events()
	}
}
