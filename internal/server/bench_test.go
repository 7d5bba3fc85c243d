package server

import (
	"context"
	"testing"
	"time"

	"github.com/parley-chat/parley/internal/loadgen"
)

// TestBenchDirectSmoke runs the load generator's direct scenario briefly. It asserts
// correctness only (every acked message delivered exactly once), never speed.
func TestBenchDirectSmoke(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.Gateway.FramesPerSecond = 1_000_000 })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := loadgen.Direct(ctx, loadgen.DirectConfig{URL: ts.base, Pairs: 4, InFlight: 4, Duration: 2 * time.Second, Warmup: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(res)
	if res.Acked == 0 || res.Lost != 0 || res.Duplicates != 0 || res.Errors != 0 {
		t.Fatalf("acked %d, lost %d, duplicates %d, errors %d", res.Acked, res.Lost, res.Duplicates, res.Errors)
	}
}
