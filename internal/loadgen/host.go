package loadgen

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// HostCPU is how the machine's CPU time was spent during the measured window, from
// /proc/stat (Linux only), and how much of it the server process used. On a virtual machine
// steal is time the hypervisor gave to someone else while this machine wanted to run: a
// latency figure taken with a high steal is a figure about the neighbours.
type HostCPU struct {
	BusyPct     float64 `json:"busy_pct"` // user, nice, system, irq, softirq
	IOWaitPct   float64 `json:"iowait_pct"`
	StealPct    float64 `json:"steal_pct"`
	IdlePct     float64 `json:"idle_pct"`
	ServerCores float64 `json:"server_cores,omitempty"` // CPU the server process used, in cores
}

func (h *HostCPU) String() string {
	if h == nil {
		return ""
	}
	s := fmt.Sprintf("\n  machine      busy %.0f%%  iowait %.0f%%  steal %.0f%%  idle %.0f%%",
		h.BusyPct, h.IOWaitPct, h.StealPct, h.IdlePct)
	if h.ServerCores > 0 {
		s += fmt.Sprintf("  (server %.2f cores)", h.ServerCores)
	}
	return s
}

// hostSample is one reading of the counters, in clock ticks.
type hostSample struct {
	at                       time.Time
	busy, iowait, steal, all uint64
	server                   uint64 // utime+stime of the server; 0 if unknown
	ok                       bool
}

// clockTicks is USER_HZ, which is 100 on every Linux architecture Go supports.
const clockTicks = 100

func readHost(pid int) hostSample {
	s := hostSample{at: time.Now()}
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return s
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return s
	}
	v := make([]uint64, len(f)-1)
	for i := range v {
		v[i], _ = strconv.ParseUint(f[i+1], 10, 64)
	}
	// user nice system idle iowait irq softirq steal [guest guest_nice, inside user/nice]
	s.busy = v[0] + v[1] + v[2] + v[5] + v[6]
	s.iowait, s.steal = v[4], v[7]
	s.all = s.busy + v[3] + s.iowait + s.steal
	s.ok = s.all > 0
	if pid > 0 {
		s.server = cpuTicks(pid)
	}
	return s
}

// cpuTicks is the CPU time (user and system) process pid has used, in clock ticks, from
// /proc/<pid>/stat; 0 if it cannot be read.
func cpuTicks(pid int) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name may hold spaces; the fields after it do not.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	pf := strings.Fields(string(b)[i+1:])
	if len(pf) <= 12 { // state is field 3; utime and stime are 14 and 15
		return 0
	}
	ut, _ := strconv.ParseUint(pf[11], 10, 64)
	st, _ := strconv.ParseUint(pf[12], 10, 64)
	return ut + st
}

func hostBetween(a, b hostSample) *HostCPU {
	if !a.ok || !b.ok || b.all <= a.all {
		return nil
	}
	total := float64(b.all - a.all)
	pct := func(x, y uint64) float64 { return 100 * float64(y-x) / total }
	h := &HostCPU{
		BusyPct:   pct(a.busy, b.busy),
		IOWaitPct: pct(a.iowait, b.iowait),
		StealPct:  pct(a.steal, b.steal),
	}
	h.IdlePct = max(0, 100-h.BusyPct-h.IOWaitPct-h.StealPct)
	if a.server > 0 && b.server >= a.server {
		if secs := b.at.Sub(a.at).Seconds(); secs > 0 {
			h.ServerCores = float64(b.server-a.server) / clockTicks / secs
		}
	}
	return h
}

// watchHost reads the counters at from and at to (or when ctx ends, if sooner) and returns
// a function that waits for the second reading and returns the window's figures, or nil
// where /proc is not there to read.
func watchHost(ctx context.Context, from, to time.Time, pid int) func() *HostCPU {
	res := make(chan *HostCPU, 1)
	go func() {
		sleepUntil := func(t time.Time) {
			timer := time.NewTimer(time.Until(t))
			defer timer.Stop()
			select {
			case <-timer.C:
			case <-ctx.Done():
			}
		}
		sleepUntil(from)
		a := readHost(pid)
		sleepUntil(to)
		res <- hostBetween(a, readHost(pid))
	}()
	return func() *HostCPU { return <-res }
}
