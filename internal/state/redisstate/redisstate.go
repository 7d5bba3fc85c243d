// Package redisstate implements state.State on Redis (6.2 or later), so that the soft state
// is shared by every node of a scaled-out Parley.
//
// Every key starts with the prefix given to New, so deployments and test runs can share one
// Redis. Each operation the contract requires to be atomic is one Lua script (EVALSHA,
// falling back to EVAL), so it is atomic however many nodes call it:
//
//	<prefix>{presence}:dev:<user>  hash   device → expiry (Unix ms) of each recorded device
//	<prefix>{presence}:exp         zset   user → earliest device expiry, the index Expire reads
//	<prefix>{presence}:seen        hash   user → last-seen time (Unix ms), no TTL
//	<prefix>limit:<key>            hash   token bucket: t (tokens), ts (as of, Unix ms)
//	<prefix>token:<key>            string a one-time value, with a Redis TTL
//
// The presence keys share the hash tag {presence} so that on a Redis Cluster they live in
// one slot, where scripts spanning them must run (the Expire script reaches device hashes
// it only learns about from the index). Parley is tested against a single Redis.
//
// Last-seen times are kept without a TTL in one hash: they must outlive a user's devices
// (a contact offline for months still has a last-seen time), and at a few dozen bytes per
// user ever seen they cost less than the presence index itself at any realistic scale.
//
// Presence and rate limits use the caller's now, as the contract requires; their keys have
// no Redis TTL that could disagree with it, except that a rate-limit bucket also gets a TTL
// of the time until it is full again plus forgetAfter, so that full buckets are forgotten.
// Tokens are the exception: their expiry is Redis's own (SET PX with the given TTL), so
// "expired" is judged by the Redis server's clock, not by now. Both PutToken and TakeToken
// accept now only to satisfy the interface.
package redisstate

import (
	"context"
	"errors"
	"fmt"
	"math"
	neturl "net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/parley-chat/parley/internal/state"
)

const (
	// expireBatch bounds how many due users one run of the Expire script visits, so that a
	// mass disconnect does not block Redis for one long script; Expire runs it until a run
	// finds fewer.
	expireBatch = 256
	// forgetAfter is how long a rate-limit bucket stays full before Redis deletes it. A
	// forgotten bucket behaves exactly like a full one, so this only trades memory against
	// robustness to nodes whose clocks (now) disagree with each other or with Redis's.
	forgetAfter = time.Minute
	// tokenEpsilon absorbs floating-point error in a refilled bucket (as in memstate).
	tokenEpsilon = "1e-9"
	// maxMillis caps computed waits so that they convert to a time.Duration without
	// overflow (about 292 years) even for absurdly slow rates.
	maxMillis = math.MaxInt64 / int64(time.Millisecond)
)

var _ state.State = (*State)(nil)

// State is a state.State on one Redis client. Create it with New. All methods are safe for
// concurrent use.
type State struct {
	rdb *redis.Client

	devPrefix string // + user id: the user's device hash
	expKey    string // zset of users by earliest device expiry
	seenKey   string // hash of last-seen times
	limPrefix string // + key: a rate-limit bucket
	tokPrefix string // + key: a token

	heartbeat, offline, expire, lookup, allow *redis.Script

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

// New connects to the Redis at url (redis://[user:password@]host:port/db, or rediss:// for
// TLS; go-redis's query options such as dial_timeout and pool_size apply) and keeps every
// key under prefix. It fails if Redis does not answer, or refuses the scripts, within ctx.
// Errors do not repeat the URL's password.
func New(ctx context.Context, url string, prefix string) (*State, error) {
	opt, err := redis.ParseURL(url)
	if err != nil {
		var ue *neturl.Error
		if errors.As(err, &ue) {
			err = ue.Err // a url.Error quotes the whole URL, password and all
		}
		return nil, fmt.Errorf("redisstate: Redis URL %s: %w", redact(url), err)
	}
	rdb := redis.NewClient(opt)
	p := prefix + "{presence}:"
	s := &State{
		rdb:       rdb,
		devPrefix: p + "dev:",
		expKey:    p + "exp",
		seenKey:   p + "seen",
		limPrefix: prefix + "limit:",
		tokPrefix: prefix + "token:",
		heartbeat: redis.NewScript(heartbeatLua),
		offline:   redis.NewScript(offlineLua),
		expire:    redis.NewScript(expireLua),
		lookup:    redis.NewScript(lookupLua),
		allow:     redis.NewScript(allowLua),
	}
	if err := rdb.Ping(ctx).Err(); err != nil {
		_ = rdb.Close()
		return nil, fmt.Errorf("redisstate: connect to Redis at %s: %w", opt.Addr, err)
	}
	for _, sc := range []*redis.Script{s.heartbeat, s.offline, s.expire, s.lookup, s.allow} {
		if err := sc.Load(ctx, rdb).Err(); err != nil {
			_ = rdb.Close()
			return nil, fmt.Errorf("redisstate: load script into Redis at %s: %w", opt.Addr, err)
		}
	}
	return s, nil
}

// Close closes the Redis client. Later calls return an error wrapping state.ErrClosed.
// Closing twice is harmless.
func (s *State) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		if err := s.rdb.Close(); err != nil {
			s.closeErr = fmt.Errorf("redisstate: close: %w", err)
		}
	})
	return s.closeErr
}

// fail wraps err from operation op, reporting a closed client as state.ErrClosed (a call
// may race with Close).
func (s *State) fail(op string, err error) error {
	if s.closed.Load() || errors.Is(err, redis.ErrClosed) {
		return fmt.Errorf("redisstate: %s: %w", op, state.ErrClosed)
	}
	return fmt.Errorf("redisstate: %s: %w", op, err)
}

// checkOpen returns the error for op if s is closed.
func (s *State) checkOpen(op string) error {
	if s.closed.Load() {
		return fmt.Errorf("redisstate: %s: %w", op, state.ErrClosed)
	}
	return nil
}

// ---- Presence ----

// heartbeatLua sets one device's expiry, re-indexes the user by earliest expiry, and
// advances last seen; it returns 1 if the user had no live device before.
// KEYS: device hash, expiry zset, last-seen hash. ARGV: user, device, now, expiry.
const heartbeatLua = `
local now = tonumber(ARGV[3])
local earliest, estr = tonumber(ARGV[4]), ARGV[4]
local live = false
local devs = redis.call('HGETALL', KEYS[1])
for i = 1, #devs, 2 do
  local e = tonumber(devs[i + 1])
  if e > now then live = true end
  if devs[i] ~= ARGV[2] and e < earliest then earliest, estr = e, devs[i + 1] end
end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[4])
redis.call('ZADD', KEYS[2], estr, ARGV[1])
local seen = redis.call('HGET', KEYS[3], ARGV[1])
if not seen or now > tonumber(seen) then redis.call('HSET', KEYS[3], ARGV[1], ARGV[3]) end
if live then return 0 end
return 1
`

// Heartbeat implements state.Presence. The device's expiry becomes now+ttl (rounded up to a
// millisecond), replacing whatever an earlier heartbeat set: the contract makes the last
// heartbeat and its TTL govern, so a shorter TTL shortens.
func (s *State) Heartbeat(ctx context.Context, userID, deviceID string, now int64, ttl time.Duration) (cameOnline bool, err error) {
	if err := s.checkOpen("heartbeat"); err != nil {
		return false, err
	}
	ms, err := ttlMillis(ttl)
	if err != nil {
		return false, fmt.Errorf("redisstate: heartbeat of user %q: %w", userID, err)
	}
	r, err := s.heartbeat.Run(ctx, s.rdb, []string{s.devPrefix + userID, s.expKey, s.seenKey},
		userID, deviceID, now, now+ms).Int64()
	if err != nil {
		return false, s.fail(fmt.Sprintf("heartbeat of user %q", userID), err)
	}
	return r == 1, nil
}

// offlineLua removes a recorded device and advances last seen. If no live device is left
// it removes the user's remaining (expired) devices and index entry and returns 1, so that
// Expire does not report the same departure. A device not recorded changes nothing.
// KEYS: device hash, expiry zset, last-seen hash. ARGV: user, device, now.
const offlineLua = `
if redis.call('HDEL', KEYS[1], ARGV[2]) == 0 then return 0 end
local now = tonumber(ARGV[3])
local seen = redis.call('HGET', KEYS[3], ARGV[1])
if not seen or now > tonumber(seen) then redis.call('HSET', KEYS[3], ARGV[1], ARGV[3]) end
local earliest, estr = nil, nil
local live = false
local exps = redis.call('HVALS', KEYS[1])
for _, v in ipairs(exps) do
  local e = tonumber(v)
  if e > now then live = true end
  if earliest == nil or e < earliest then earliest, estr = e, v end
end
if not live then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 1
end
redis.call('ZADD', KEYS[2], estr, ARGV[1])
return 0
`

// Offline implements state.Presence. wentOffline is true only for the call that ends the
// user's presence: if the device is not recorded (never heartbeated, already offline, or
// already collected by Expire) the call changes nothing and returns false, so one
// disconnect is never announced twice.
func (s *State) Offline(ctx context.Context, userID, deviceID string, now int64) (wentOffline bool, err error) {
	if err := s.checkOpen("offline"); err != nil {
		return false, err
	}
	r, err := s.offline.Run(ctx, s.rdb, []string{s.devPrefix + userID, s.expKey, s.seenKey},
		userID, deviceID, now).Int64()
	if err != nil {
		return false, s.fail(fmt.Sprintf("offline of user %q", userID), err)
	}
	return r == 1, nil
}

// expireLua visits at most ARGV[3] users whose earliest device expiry is at or before now,
// removes their expired devices, and removes and reports the users left with none (with
// their last-seen time); the others are re-indexed at their new earliest expiry, past now.
// Because the check and the removal are one script, a user is reported by one caller only.
// It returns {visited, {user, last seen, user, last seen, ...}}.
// KEYS: expiry zset, last-seen hash. ARGV: device hash prefix, now, batch size.
const expireLua = `
local now = tonumber(ARGV[2])
local users = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
local gone = {}
for _, u in ipairs(users) do
  local k = ARGV[1] .. u
  local devs = redis.call('HGETALL', k)
  local earliest, estr = nil, nil
  for i = 1, #devs, 2 do
    local e = tonumber(devs[i + 1])
    if e <= now then
      redis.call('HDEL', k, devs[i])
    elseif earliest == nil or e < earliest then
      earliest, estr = e, devs[i + 1]
    end
  end
  if earliest == nil then
    redis.call('DEL', k)
    redis.call('ZREM', KEYS[1], u)
    gone[#gone + 1] = u
    gone[#gone + 1] = redis.call('HGET', KEYS[2], u) or '0'
  else
    redis.call('ZADD', KEYS[1], estr, u)
  end
end
return {#users, gone}
`

// Expire implements state.Presence. It runs the Expire script in batches until a batch
// finds fewer than expireBatch due users. If a batch fails, the users already removed by
// earlier batches are returned along with the error: they will not be reported again, so
// the caller should still announce them.
func (s *State) Expire(ctx context.Context, now int64) ([]state.UserPresence, error) {
	if err := s.checkOpen("expire"); err != nil {
		return nil, err
	}
	var gone []state.UserPresence
	for {
		res, err := s.expire.Run(ctx, s.rdb, []string{s.expKey, s.seenKey}, s.devPrefix, now, expireBatch).Slice()
		if err != nil {
			return gone, s.fail("expire", err)
		}
		visited, pairs, err := parseExpire(res)
		if err != nil {
			return gone, fmt.Errorf("redisstate: expire: %w", err)
		}
		for i := 0; i < len(pairs); i += 2 {
			gone = append(gone, state.UserPresence{UserID: pairs[i], LastSeenTS: parseMillis(pairs[i+1])})
		}
		if visited < expireBatch {
			return gone, nil
		}
	}
}

// parseExpire unpacks the Expire script's reply.
func parseExpire(res []any) (visited int64, pairs []string, err error) {
	if len(res) != 2 {
		return 0, nil, fmt.Errorf("unexpected script reply %v", res)
	}
	visited, ok := res[0].(int64)
	list, ok2 := res[1].([]any)
	if !ok || !ok2 || len(list)%2 != 0 {
		return 0, nil, fmt.Errorf("unexpected script reply %v", res)
	}
	pairs = make([]string, len(list))
	for i, v := range list {
		if pairs[i], ok = v.(string); !ok {
			return 0, nil, fmt.Errorf("unexpected script reply %v", res)
		}
	}
	return visited, pairs, nil
}

// lookupLua returns, for each user, whether a device is live at now and the last-seen time
// ('0' if never seen): {online, last seen, online, last seen, ...}.
// KEYS: the device hash of each user, then the last-seen hash. ARGV: now, then the users.
const lookupLua = `
local now = tonumber(ARGV[1])
local seenKey = KEYS[#KEYS]
local out = {}
for i = 1, #KEYS - 1 do
  local online = 0
  for _, v in ipairs(redis.call('HVALS', KEYS[i])) do
    if tonumber(v) > now then online = 1 break end
  end
  out[#out + 1] = online
  out[#out + 1] = redis.call('HGET', seenKey, ARGV[i + 1]) or '0'
end
return out
`

// Lookup implements state.Presence, in one script so one round trip answers for all ids
// and the answers are a consistent snapshot.
func (s *State) Lookup(ctx context.Context, ids []string, now int64) ([]state.UserPresence, error) {
	if err := s.checkOpen("lookup"); err != nil {
		return nil, err
	}
	out := make([]state.UserPresence, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	keys := make([]string, 0, len(ids)+1)
	args := make([]any, 0, len(ids)+1)
	args = append(args, now)
	for _, id := range ids {
		keys = append(keys, s.devPrefix+id)
		args = append(args, id)
	}
	keys = append(keys, s.seenKey)
	res, err := s.lookup.Run(ctx, s.rdb, keys, args...).Slice()
	if err != nil {
		return nil, s.fail(fmt.Sprintf("lookup of %d users", len(ids)), err)
	}
	if len(res) != 2*len(ids) {
		return nil, fmt.Errorf("redisstate: lookup: script returned %d values for %d users", len(res), len(ids))
	}
	for i, id := range ids {
		online, _ := res[2*i].(int64)
		seen, _ := res[2*i+1].(string)
		out[i] = state.UserPresence{UserID: id, Online: online == 1, LastSeenTS: parseMillis(seen)}
	}
	return out, nil
}

// ---- Limits ----

// allowLua is memstate's bucket.take, step for step: refill up to now, take a token if there
// is one, else compute the wait for one; then store the bucket with a TTL of the time until
// it is full plus forgetAfter. It returns {1, 0} or {0, wait in ms}.
// KEYS: the bucket. ARGV: rate (tokens/s), burst, now, forgetAfter (ms), epsilon, max ms.
const allowLua = `
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local eps = tonumber(ARGV[5])
local maxms = tonumber(ARGV[6])
local function ceilms(x) if x >= maxms then return maxms end return math.ceil(x) end
local st = redis.call('HMGET', KEYS[1], 't', 'ts')
local tokens, ts = burst, now
if st[1] and st[2] then tokens, ts = tonumber(st[1]), tonumber(st[2]) end
if now > ts then
  tokens = tokens + (now - ts) * rate / 1000
  ts = now
end
if tokens > burst then tokens = burst end
local ok, wait = 0, 0
if tokens >= 1 - eps then
  tokens = math.max(0, tokens - 1)
  ok = 1
else
  wait = ceilms((1 - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 't', string.format('%.17g', tokens), 'ts', string.format('%.17g', ts))
redis.call('PEXPIRE', KEYS[1], ceilms((burst - tokens) * 1000 / rate) + tonumber(ARGV[4]))
return {ok, wait}
`

// Allow implements state.Limits. rate must be positive and finite, and burst at least 1.
// Buckets are forgotten (by Redis's TTL) forgetAfter after they are full again.
func (s *State) Allow(ctx context.Context, key string, rate float64, burst int, now int64) (ok bool, retryAfter time.Duration, err error) {
	if err := s.checkOpen("allow"); err != nil {
		return false, 0, err
	}
	if !(rate > 0) || math.IsInf(rate, 1) {
		return false, 0, fmt.Errorf("redisstate: allow %q: rate %v tokens/s is not positive and finite", key, rate)
	}
	if burst < 1 {
		return false, 0, fmt.Errorf("redisstate: allow %q: burst %d is less than 1", key, burst)
	}
	res, err := s.allow.Run(ctx, s.rdb, []string{s.limPrefix + key},
		strconv.FormatFloat(rate, 'g', -1, 64), burst, now, forgetAfter.Milliseconds(), tokenEpsilon, maxMillis).Int64Slice()
	if err != nil {
		return false, 0, s.fail(fmt.Sprintf("allow %q", key), err)
	}
	if len(res) != 2 {
		return false, 0, fmt.Errorf("redisstate: allow %q: unexpected script reply %v", key, res)
	}
	return res[0] == 1, time.Duration(res[1]) * time.Millisecond, nil
}

// ---- Tokens ----

// PutToken implements state.Tokens with SET NX PX. The token expires ttl (rounded up to a
// millisecond) after Redis stores it, by Redis's clock; now is not used. ttl must be
// positive. Errors do not repeat the key, which is a secret (a WebSocket ticket).
func (s *State) PutToken(ctx context.Context, key, value string, now int64, ttl time.Duration) error {
	if err := s.checkOpen("put token"); err != nil {
		return err
	}
	ms, err := ttlMillis(ttl)
	if err != nil {
		return fmt.Errorf("redisstate: put token: %w", err)
	}
	stored, err := s.rdb.SetNX(ctx, s.tokPrefix+key, value, time.Duration(ms)*time.Millisecond).Result()
	if err != nil {
		return s.fail("put token", err)
	}
	if !stored {
		return fmt.Errorf("redisstate: put token: %w", state.ErrExists)
	}
	return nil
}

// TakeToken implements state.Tokens with GETDEL, which is atomic: of concurrent takes one
// gets the value. Expiry is Redis's (see PutToken); now is not used.
func (s *State) TakeToken(ctx context.Context, key string, now int64) (value string, ok bool, err error) {
	if err := s.checkOpen("take token"); err != nil {
		return "", false, err
	}
	v, err := s.rdb.GetDel(ctx, s.tokPrefix+key).Result()
	if errors.Is(err, redis.Nil) {
		return "", false, nil
	}
	if err != nil {
		return "", false, s.fail("take token", err)
	}
	return v, true, nil
}

// PeekToken implements state.Tokens with GET. Expiry is Redis's; now is not used.
func (s *State) PeekToken(ctx context.Context, key string, now int64) (value string, ok bool, err error) {
	if err := s.checkOpen("peek token"); err != nil {
		return "", false, err
	}
	v, err := s.rdb.Get(ctx, s.tokPrefix+key).Result()
	if errors.Is(err, redis.Nil) {
		return "", false, nil
	}
	if err != nil {
		return "", false, s.fail("peek token", err)
	}
	return v, true, nil
}

// ---- helpers ----

// ttlMillis converts a positive TTL to milliseconds, rounding up so that a sub-millisecond
// TTL still means "alive at now".
func ttlMillis(ttl time.Duration) (int64, error) {
	if ttl <= 0 {
		return 0, fmt.Errorf("ttl %v is not positive", ttl)
	}
	return (int64(ttl) + int64(time.Millisecond) - 1) / int64(time.Millisecond), nil
}

// parseMillis parses a time stored by the scripts; anything else (which only a foreign
// writer could have stored) reads as 0, "never seen".
func parseMillis(s string) int64 {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0
	}
	return n
}

// redact returns url with any password replaced, for error messages.
func redact(url string) string {
	u, err := neturl.Parse(url)
	if err != nil {
		return "(malformed)"
	}
	return u.Redacted()
}
