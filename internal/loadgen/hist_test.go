package loadgen

import (
	"encoding/json"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestHistogramQuantiles(t *testing.T) {
	var h Histogram
	vals := make([]time.Duration, 0, 100000)
	for range 100000 {
		d := time.Duration(rand.ExpFloat64()*2000) * time.Microsecond
		vals = append(vals, d)
		h.Record(d)
	}
	slices.Sort(vals)
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		want := vals[int(q*float64(len(vals)))-1]
		got := h.Quantile(q)
		if diff := float64(got-want) / float64(want+time.Microsecond); diff > 0.03 || diff < -0.03 {
			t.Errorf("q%.3f = %v, want %v ±3%%", q, got, want)
		}
	}
	if h.Max() != vals[len(vals)-1].Truncate(time.Microsecond) {
		t.Errorf("max = %v, want %v", h.Max(), vals[len(vals)-1])
	}
	if h.Count() != 100000 {
		t.Errorf("count = %d", h.Count())
	}
}

func TestBucketsMonotonic(t *testing.T) {
	prev := -1
	for us := int64(0); us < 1<<40; us = us*11/10 + 1 {
		b := bucketOf(us)
		if b < prev {
			t.Fatalf("bucket of %d = %d < %d", us, b, prev)
		}
		if v := valueOf(b); float64(v-us)/float64(us+1) > 0.02 || float64(us-v)/float64(us+1) > 0.02 {
			t.Fatalf("value of bucket %d = %d, far from %d", b, v, us)
		}
		prev = b
	}
}

// TestHistogramWire: a histogram sent as JSON and merged with another gives the figures of
// one histogram that recorded both.
func TestHistogramWire(t *testing.T) {
	var a, b, both Histogram
	for i := range 5000 {
		d := time.Duration(rand.ExpFloat64()*float64(3*time.Millisecond)) + time.Duration(i)
		if i%3 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
		both.Record(d)
	}
	data, err := json.Marshal(&a)
	if err != nil {
		t.Fatal(err)
	}
	var got Histogram
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	got.Merge(&b)
	if got.Summary() != both.Summary() {
		t.Fatalf("merged %v, want %v", got.Summary(), both.Summary())
	}
	if err := json.Unmarshal([]byte(`{"buckets":[[999999,1]]}`), &got); err == nil {
		t.Fatal("a bucket out of range was accepted")
	}
}
