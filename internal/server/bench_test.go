package server

import (
	"os/exec"
	"strings"
	"testing"
)

// TestBenchDirectSmoke runs `parley bench direct --duration 5s` as a user would: it starts
// its own server and fails unless every acked message was delivered exactly once. It asserts
// correctness only, never speed.
func TestBenchDirectSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the load generator for 5 s")
	}
	bin := buildParley(t)
	out, err := exec.Command(bin, "bench", "direct", "--duration", "5s", "--warmup", "500ms", "--pairs", "4", "--inflight", "4").CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		t.Fatalf("parley bench direct: %v", err)
	}
	if !strings.Contains(string(out), "lost 0  duplicates 0  errors 0") {
		t.Fatal("the run lost, duplicated or failed messages")
	}
}
