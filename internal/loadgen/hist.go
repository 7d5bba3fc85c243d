// Package loadgen drives load against a Parley server for `parley bench` and measures it.
package loadgen

import (
	"encoding/json"
	"fmt"
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// Histogram records durations with about 1.6% relative precision over the full range of
// int64 microseconds, in fixed memory, HDR-style: values below 128 µs are exact, larger ones
// fall into 64 sub-buckets per power of two. Record is lock-free and safe for concurrent use.
type Histogram struct {
	counts [58 * 64]atomic.Uint64
	n      atomic.Uint64
	max    atomic.Int64
}

func bucketOf(us int64) int {
	if us < 0 {
		us = 0
	}
	if us < 128 {
		return int(us)
	}
	shift := bits.Len64(uint64(us)) - 7 // 1 or more
	sub := int(us >> shift)             // 64..127
	return shift*64 + sub
}

// valueOf returns a representative value (the middle) of bucket i, in µs.
func valueOf(i int) int64 {
	if i < 128 {
		return int64(i)
	}
	shift := (i - 64) / 64
	sub := i - shift*64
	return int64(sub)<<shift + int64(1)<<shift/2
}

// Record adds one observation.
func (h *Histogram) Record(d time.Duration) {
	us := d.Microseconds()
	h.counts[bucketOf(us)].Add(1)
	h.n.Add(1)
	h.raiseMax(us)
}

// Count is the number of observations.
func (h *Histogram) Count() uint64 { return h.n.Load() }

// Max is the largest observation.
func (h *Histogram) Max() time.Duration { return time.Duration(h.max.Load()) * time.Microsecond }

// Quantile returns the value at quantile q (0..1).
func (h *Histogram) Quantile(q float64) time.Duration {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(n)))
	if rank == 0 {
		rank = 1
	}
	var seen uint64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			v := time.Duration(valueOf(i)) * time.Microsecond
			return min(v, h.Max())
		}
	}
	return h.Max()
}

// Summary is a histogram's figures, in milliseconds, for reports and JSON.
type Summary struct {
	Count uint64  `json:"count"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p999_ms"`
	Max   float64 `json:"max_ms"`
}

// Summary computes the standard quantiles.
func (h *Histogram) Summary() Summary {
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	return Summary{
		Count: h.Count(),
		P50:   ms(h.Quantile(0.50)),
		P90:   ms(h.Quantile(0.90)),
		P99:   ms(h.Quantile(0.99)),
		P999:  ms(h.Quantile(0.999)),
		Max:   ms(h.Max()),
	}
}

func (s Summary) String() string {
	return fmt.Sprintf("p50 %.2fms  p90 %.2fms  p99 %.2fms  p99.9 %.2fms  max %.2fms  (n=%d)",
		s.P50, s.P90, s.P99, s.P999, s.Max, s.Count)
}

// histWire is a histogram on the wire between a worker process and its coordinator: the
// buckets that are not empty, as (index, count) pairs.
type histWire struct {
	Buckets [][2]uint64 `json:"buckets"`
	MaxUS   int64       `json:"max_us"`
}

// MarshalJSON encodes the histogram's counts, for a coordinator to Merge.
func (h *Histogram) MarshalJSON() ([]byte, error) {
	w := histWire{Buckets: [][2]uint64{}, MaxUS: h.max.Load()}
	for i := range h.counts {
		if n := h.counts[i].Load(); n > 0 {
			w.Buckets = append(w.Buckets, [2]uint64{uint64(i), n})
		}
	}
	return json.Marshal(w)
}

// UnmarshalJSON adds the counts that MarshalJSON encoded to h.
func (h *Histogram) UnmarshalJSON(data []byte) error {
	var w histWire
	if err := json.Unmarshal(data, &w); err != nil {
		return err
	}
	for _, b := range w.Buckets {
		if b[0] >= uint64(len(h.counts)) {
			return fmt.Errorf("histogram: bucket %d out of range", b[0])
		}
		h.counts[b[0]].Add(b[1])
		h.n.Add(b[1])
	}
	h.raiseMax(w.MaxUS)
	return nil
}

// Merge adds o's observations to h.
func (h *Histogram) Merge(o *Histogram) {
	for i := range o.counts {
		if n := o.counts[i].Load(); n > 0 {
			h.counts[i].Add(n)
		}
	}
	h.n.Add(o.n.Load())
	h.raiseMax(o.max.Load())
}

func (h *Histogram) raiseMax(us int64) {
	for {
		m := h.max.Load()
		if us <= m || h.max.CompareAndSwap(m, us) {
			return
		}
	}
}
