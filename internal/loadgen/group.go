package loadgen

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/parley-chat/parley/protocol"
)

// GroupConfig is the "group" scenario: Groups groups of Members online members each; in
// each group Senders members keep InFlight sends outstanding. Every other member's device
// receives every message: a fan-out of Members-1 deliveries per message.
type GroupConfig struct {
	URL string
	// NodeURLs, if set, are other nodes of the same cluster: members' WebSockets are spread
	// over URL and them in turn, so that every group has members on every node (accounts
	// and groups are made through URL; every node accepts every node's tokens).
	NodeURLs  []string
	Groups    int
	Members   int
	Senders   int
	InFlight  int
	Duration  time.Duration
	Warmup    time.Duration
	Prefix    string
	SourceIPs []string
	ServerPID int // to report the server's CPU use; 0 = not reported
}

// GroupResult is what a group run measured.
type GroupResult struct {
	Scenario       string  `json:"scenario"`
	Groups         int     `json:"groups"`
	Members        int     `json:"members"`
	Senders        int     `json:"senders"`
	InFlight       int     `json:"inflight"`
	DurationS      float64 `json:"duration_s"`
	Acked          uint64  `json:"acked"`
	Deliveries     uint64  `json:"deliveries"`
	AckedPerS      float64 `json:"acked_per_s"`
	DeliveriesPerS float64 `json:"deliveries_per_s"`
	SendToAck      Summary `json:"send_to_ack"`
	FanOut         Summary `json:"send_to_deliver"`
	Lost           int     `json:"lost"`
	Duplicates     int     `json:"duplicates"`
	Errors         int     `json:"errors"`
	Faults
	Host *HostCPU `json:"host,omitempty"` // the machine's CPU during the window (Linux)
}

func (r GroupResult) String() string {
	return fmt.Sprintf(`group: %d groups of %d online members, %d senders each with %d in flight, %.1fs
  acked       %9.0f msg/s         (%d)
  deliveries  %9.0f deliveries/s  (%d)
  send→ack     %s
  send→deliver %s
  lost %d  duplicates %d  errors %d`,
		r.Groups, r.Members, r.Senders, r.InFlight, r.DurationS, r.AckedPerS, r.Acked, r.DeliveriesPerS, r.Deliveries,
		r.SendToAck, r.FanOut, r.Lost, r.Duplicates, r.Errors) + r.Faults.String() + r.Host.String()
}

// Group runs the group scenario against cfg.URL.
func Group(ctx context.Context, cfg GroupConfig) (GroupResult, error) {
	if cfg.Groups <= 0 || cfg.Members < 2 || cfg.Senders <= 0 || cfg.Senders > cfg.Members || cfg.InFlight <= 0 || cfg.Duration <= 0 {
		return GroupResult{}, errors.New("group: need groups > 0, members >= 2, 0 < senders <= members, inflight > 0, duration > 0")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "g" + strconv.FormatInt(time.Now().UnixNano()%1e8, 36)
	}
	users, err := Accounts(ctx, cfg.URL, cfg.Prefix, cfg.Groups*cfg.Members)
	if err != nil {
		return GroupResult{}, err
	}
	dialers := []*dialer{newDialer(cfg.URL, cfg.SourceIPs)}
	for _, u := range cfg.NodeURLs {
		dialers = append(dialers, newDialer(u, cfg.SourceIPs))
	}
	var conns []*lconn
	defer func() {
		for _, c := range conns {
			c.close()
		}
	}()
	var senders []*sender
	var receivers []groupMember
	var trackers []*tracker
	for g := range cfg.Groups {
		us := users[g*cfg.Members : (g+1)*cfg.Members]
		ids := make([]string, 0, len(us)-1)
		for _, u := range us[1:] {
			ids = append(ids, u.Tokens().UserID)
		}
		conv, err := us[0].CreateGroup(ctx, fmt.Sprintf("bench %d", g), ids)
		if err != nil {
			return GroupResult{}, fmt.Errorf("create group: %w", err)
		}
		// Each message reaches every member but its sender; the tracker counts per seq, so
		// it expects Members-1 deliveries of each.
		tr := newTracker(cfg.Members-1, conv.LastSeq)
		trackers = append(trackers, tr)
		for i, u := range us {
			c, err := dialers[i%len(dialers)].dial(ctx, u.Tokens().AccessToken)
			if err != nil {
				return GroupResult{}, fmt.Errorf("connect: %w", err)
			}
			conns = append(conns, c)
			receivers = append(receivers, groupMember{c, tr, &seqSet{}})
			if i < cfg.Senders {
				senders = append(senders, &sender{c: c, conv: conv.ID, t0: map[string]time.Time{}, slots: make(chan struct{}, cfg.InFlight)})
			}
		}
	}

	m, runCtx, stop := newMeter(ctx, cfg.Warmup, cfg.Duration, cfg.ServerPID)
	defer stop()
	isSender := map[*lconn]*sender{}
	for _, s := range senders {
		isSender[s.c] = s
	}

	// One reader per connection: a sender's connection carries its acks and the other
	// senders' messages.
	var readers sync.WaitGroup
	for k, mem := range receivers {
		s := isSender[mem.c]
		var order *seqOrder // a sender skips its own messages: no order to check
		if s == nil {
			order = &seqOrder{m: m, name: fmt.Sprintf("member connection %d", k)}
		}
		readers.Go(func() {
			m.readLoop(mem.c, func(f frameInfo) {
				switch f.typ {
				case protocol.FrameMessage:
					m.delivery(f, mem.tr)
					mem.got.add(f.seq)
					if order != nil {
						order.next(f.seq)
					}
				case protocol.FrameAck:
					if s != nil {
						m.ack(s, f, mem.tr)
						mem.got.add(f.seq)
					}
				case protocol.FrameError:
					m.refused(s, f) // s is nil on a member that does not send
				}
			})
		})
	}
	var writers sync.WaitGroup
	for _, s := range senders {
		writers.Go(func() { m.closedLoop(runCtx, s) })
	}
	writers.Wait()
	elapsed := min(time.Since(m.win.from), cfg.Duration)
	hostCPU := m.host()
	unanswered := settle(trackers, senders, 10*time.Second)
	m.ending.Store(true)
	for _, c := range conns {
		c.close()
	}
	readers.Wait()
	res := GroupResult{
		Scenario: "group", Groups: cfg.Groups, Members: cfg.Members, Senders: cfg.Senders, InFlight: cfg.InFlight,
		DurationS: elapsed.Seconds(), Acked: m.acked.Load(), Deliveries: m.delivered.Load(),
		SendToAck: m.ackH.Summary(), FanOut: m.delH.Summary(), Errors: int(m.errs.Load()),
		Host: hostCPU,
	}
	res.AckedPerS = float64(res.Acked) / elapsed.Seconds()
	res.DeliveriesPerS = float64(res.Deliveries) / elapsed.Seconds()
	res.Lost, res.Duplicates = check(trackers)
	res.Faults = m.faults(trackers, unanswered, "group")
	if missed := whoMissed(trackers, receivers, isSender); missed != "" {
		res.LostSeqs += "; missed: " + missed
	}
	return res, nil
}

// groupMember is one member's connection in a group run.
type groupMember struct {
	c   *lconn
	tr  *tracker // its group's
	got *seqSet  // seqs it received, or was acked for: to name who missed a lost one
}

// whoMissed names, for the first lost seqs of each group, the member connections that did
// not get them (members are listed group after group, as trackers are).
func whoMissed(trackers []*tracker, members []groupMember, isSender map[*lconn]*sender) string {
	var missed []string
	for g, tr := range trackers {
		for _, seq := range tr.lostSeqs(2) {
			var who []string
			for k, mem := range members {
				if mem.tr != tr || mem.got.has(seq) {
					continue
				}
				role := ""
				if isSender[mem.c] != nil {
					role = " (a sender)"
				}
				who = append(who, fmt.Sprintf("%d%s", k, role))
			}
			missed = append(missed, fmt.Sprintf("group %d seq %d by connections %s", g, seq, strings.Join(who, ", ")))
		}
	}
	return strings.Join(missed, "; ")
}

// seqSet is a set of seqs (from 1), as bits.
type seqSet struct{ bits []uint64 }

func (s *seqSet) add(seq int64) {
	if seq <= 0 {
		return
	}
	i := int(seq / 64)
	if i >= len(s.bits) {
		s.bits = append(s.bits, make([]uint64, i+1-len(s.bits))...)
	}
	s.bits[i] |= 1 << (seq % 64)
}

func (s *seqSet) has(seq int64) bool {
	i := int(seq / 64)
	return seq > 0 && i < len(s.bits) && s.bits[i]&(1<<(seq%64)) != 0
}
