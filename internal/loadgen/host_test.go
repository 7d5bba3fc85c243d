package loadgen

import (
	"errors"
	"os"
	"runtime"
	"testing"
	"time"
)

func TestHostBetween(t *testing.T) {
	t0 := time.Unix(1000, 0)
	a := hostSample{at: t0, busy: 100, iowait: 10, steal: 20, all: 200, server: 50, ok: true}
	tests := []struct {
		name string
		b    hostSample
		want *HostCPU
	}{
		{"shares and server cores", hostSample{at: t0.Add(2 * time.Second), busy: 160, iowait: 20, steal: 50, all: 400, server: 250, ok: true},
			&HostCPU{BusyPct: 30, IOWaitPct: 5, StealPct: 15, IdlePct: 50, ServerCores: 1}},
		{"no server reading", hostSample{at: t0.Add(time.Second), busy: 200, iowait: 10, steal: 20, all: 300, ok: true},
			&HostCPU{BusyPct: 100, IdlePct: 0}},
		{"no time passed", hostSample{at: t0, busy: 100, all: 200, ok: true}, nil},
		{"unreadable", hostSample{}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := hostBetween(a, tc.b)
			if (got == nil) != (tc.want == nil) || (got != nil && *got != *tc.want) {
				t.Errorf("hostBetween = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestReadHostOwnProcess(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	// Use enough CPU to be counted (the counters are in 10 ms ticks).
	for start := time.Now(); time.Since(start) < 100*time.Millisecond; {
	}
	s := readHost(os.Getpid())
	if !s.ok || s.all == 0 {
		t.Fatalf("readHost: %+v; want /proc/stat read", s)
	}
	if s.server == 0 { // a test binary has used some CPU by now
		t.Errorf("readHost(own pid): no CPU time read from /proc/<pid>/stat: %+v", s)
	}
}

func TestServerClose(t *testing.T) {
	tests := []struct {
		payload []byte
		want    string
	}{
		{append([]byte{0x03, 0xf0}, "too slow: send queue full"...), "closed by server: 1008 too slow: send queue full"},
		{[]byte{0x03, 0xe9}, "closed by server: 1001 "},
		{nil, "closed by server: 0 "},
	}
	for _, tc := range tests {
		err := serverClose(tc.payload)
		var ce *closedError
		if !errors.As(err, &ce) || err.Error() != tc.want {
			t.Errorf("serverClose(%q) = %v, want %q", tc.payload, err, tc.want)
		}
	}
}
