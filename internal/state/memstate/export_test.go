package memstate

// Sizes reports how many rate-limit buckets and tokens s holds, for tests of their
// collection.
func Sizes(s *State) (buckets, tokens int) {
	s.lmu.Lock()
	buckets = len(s.buckets)
	s.lmu.Unlock()
	s.tmu.Lock()
	tokens = len(s.tokens)
	s.tmu.Unlock()
	return buckets, tokens
}

// SetMaxBuckets lowers the bucket cap for a test.
func SetMaxBuckets(s *State, n int) {
	s.lmu.Lock()
	s.maxBuckets = n
	s.lmu.Unlock()
}
