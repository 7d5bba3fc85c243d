package server

import (
	"os/exec"
	"runtime"
	"strings"
	"testing"
)

// TestBenchSmoke runs `parley bench` scenarios as a user would: each starts its own server
// and fails unless every acked message reached every recipient exactly once. It asserts
// correctness only, never speed.
func TestBenchSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the load generator for about 12 s")
	}
	bin := buildParley(t)
	for _, tc := range []struct {
		name string
		args []string
		want string // the line that says nothing was lost
	}{
		{"direct", []string{"direct", "--duration", "5s", "--warmup", "500ms", "--pairs", "4", "--inflight", "4"}, "lost 0  duplicates 0  errors 0"},
		{"rate", []string{"rate", "--duration", "2s", "--warmup", "500ms", "--pairs", "4", "--rate", "400"}, "lost 0  duplicates 0  errors 0"},
		{"group", []string{"group", "--duration", "2s", "--warmup", "500ms", "--groups", "1", "--members", "10", "--senders", "2", "--inflight", "2"}, "lost 0  duplicates 0  errors 0"},
		{"reconnect", []string{"reconnect", "--clients", "40"}, "missing 0  connect errors 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := exec.Command(bin, append([]string{"bench"}, tc.args...)...).CombinedOutput()
			t.Logf("%s", out)
			if err != nil {
				t.Fatalf("parley bench %s: %v", tc.name, err)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Fatalf("the run lost, duplicated or failed messages: no %q", tc.want)
			}
			// How the machine's CPU was spent in the measured window (read from /proc).
			if runtime.GOOS == "linux" && !strings.Contains(string(out), "\n  machine ") {
				t.Fatal("no machine line")
			}
		})
	}
}
