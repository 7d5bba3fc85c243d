package loadgen

import (
	"strings"
	"testing"
	"time"
)

// TestSoakJudge: a soak fails on what grows beyond the data (memory, goroutines, open files,
// a WAL past its bound, a database that grows faster per message), and not on a spike of one
// sample or on the warm-up.
func TestSoakJudge(t *testing.T) {
	const mib = 1 << 20
	// base is 21 samples, one a minute, of a healthy server: flat figures, the database
	// growing 250 bytes a message at 300,000 messages a minute, the first two in warm-up.
	base := func(i int) SoakSample {
		return SoakSample{
			T: float64(i * 60), Acked: uint64(i) * 300_000, RSSKiB: 150 * 1024, Goroutines: 50, Threads: 11, FDs: 225,
			Files: map[string]int64{
				"parley.db":     int64(i) * 300_000 * 250,
				"parley.db-wal": 19 * mib,
				"parley.db-shm": 160 << 10,
			},
		}
	}
	for _, tc := range []struct {
		name   string
		change func(i int, s *SoakSample)
		fail   string // the series that must fail, "" for none
	}{
		{"healthy", func(int, *SoakSample) {}, ""},
		{"warm-up not counted", func(i int, s *SoakSample) {
			if i < 2 {
				s.RSSKiB, s.Goroutines = 40*1024, 20
			}
		}, ""},
		{"one spike", func(i int, s *SoakSample) {
			if i == 19 {
				s.Goroutines, s.RSSKiB = 90, 180*1024
			}
		}, ""},
		{"RSS leak", func(i int, s *SoakSample) { s.RSSKiB += int64(i) * 2 * 1024 }, "server RSS"},
		{"goroutine leak", func(i int, s *SoakSample) { s.Goroutines += i }, "goroutines"},
		{"file descriptor leak", func(i int, s *SoakSample) { s.FDs += i }, "open files"},
		{"WAL past its bound", func(i int, s *SoakSample) { s.Files["parley.db-wal"] = int64(i) * 5 * mib }, "parley.db-wal"},
		{"shm grows", func(i int, s *SoakSample) { s.Files["parley.db-shm"] = int64(i) * mib }, "parley.db-shm"},
		{"database bloats", func(i int, s *SoakSample) {
			s.Files["parley.db"] = int64(i) * int64(i) * 300_000 * 25 // per message: 25 × 2i bytes
		}, "parley.db"},
		{"a new file grows", func(i int, s *SoakSample) { s.Files["nats/stream"] = int64(i) * 3 * mib }, "nats/stream"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var samples []SoakSample
			for i := range 21 {
				s := base(i)
				tc.change(i, &s)
				samples = append(samples, s)
			}
			series, failures := judge(samples, SoakConfig{Settle: 2 * time.Minute, MaxWAL: 64 * mib})
			var failed []string
			for _, s := range series {
				if s.Failed {
					failed = append(failed, s.Name)
				}
			}
			want := []string{}
			if tc.fail != "" {
				want = []string{tc.fail}
			}
			if strings.Join(failed, ",") != strings.Join(want, ",") || len(failures) != len(want) {
				t.Errorf("failed %v (%v), want %v", failed, failures, want)
			}
		})
	}
	if _, failures := judge([]SoakSample{{T: 0}, {T: 30}}, SoakConfig{}); len(failures) != 1 {
		t.Errorf("two samples judged: %v, want a failure saying the run is too short", failures)
	}
}
