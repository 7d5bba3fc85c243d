//go:build linux

package gateway

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// epoll watches every connection's socket with one epoll instance and one goroutine. A
// socket is registered edge-triggered: it is reported when bytes arrive, and the reader
// reads until the socket is drained (a short read; after a hang-up, to the end), so an
// idle connection costs a kernel entry, not a goroutine, and a read costs no epoll_ctl to
// re-arm the socket (one-shot registration did: one more system call per client frame).
// Bytes that arrive while a reader is at work are reported again, and that reader reads
// again (Conn.rstate), so one goroutine reads a connection at a time, in order.
//
// The event's user data is the connection's id, not its file descriptor, so an event that
// was already returned for a socket closed meanwhile (whose fd number the kernel may have
// handed to a new connection) finds no connection instead of the wrong one.
//
// Ready connections go to a few long-lived reader goroutines when one is idle, and to a new
// goroutine only when none is. A new goroutine starts on a small stack and grows it through
// the decode and submit path on every read: at 10,000 messages a second that stack copying
// was 5-6% of the server's CPU. A reader that blocks (a slow presence store, a full chat
// queue) stalls no one, since the next ready connection gets a goroutine of its own.
type epoll struct {
	fail    func(error) // told if the loop stops on an error
	fd      int
	mu      sync.RWMutex
	conns   map[uint64]*Conn
	closed  atomic.Bool
	done    chan struct{}
	ready   chan *Conn // unbuffered: a send succeeds only if a reader is waiting
	readers sync.WaitGroup
}

// pollReaders is how many reader goroutines wait for ready connections. One epoll_wait
// hands out up to a few dozen connections at 10,000 messages a second; with 2 readers per
// P most of them went to new goroutines, with 8 few do (measured: docs/benchmarks.md).
func pollReaders() int { return 8 * runtime.GOMAXPROCS(0) }

const epollEvents = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLET

func newPoller(fail func(error)) (poller, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	p := &epoll{fail: fail, fd: fd, conns: make(map[uint64]*Conn), done: make(chan struct{}), ready: make(chan *Conn)}
	for range pollReaders() {
		p.readers.Go(func() {
			for c := range p.ready {
				c.readReady()
			}
		})
	}
	go p.run()
	return p, nil
}

func (p *epoll) ctl(c *Conn, op int) error {
	ev := unix.EpollEvent{Events: epollEvents, Fd: int32(uint32(c.id)), Pad: int32(uint32(c.id >> 32))}
	var cerr error
	err := c.rc.Control(func(fd uintptr) {
		cerr = unix.EpollCtl(p.fd, op, int(fd), &ev)
	})
	return errors.Join(err, cerr)
}

func (p *epoll) add(c *Conn) error {
	p.mu.Lock()
	p.conns[c.id] = c
	p.mu.Unlock()
	if err := p.ctl(c, unix.EPOLL_CTL_ADD); err != nil {
		p.remove(c)
		return fmt.Errorf("epoll add: %w", err)
	}
	return nil
}

// A connection's rstate: no reader, a reader at work, or a reader at work and bytes
// reported since it started.
const (
	readIdle = iota
	readBusy
	readAgain
)

// wake reports whether a ready connection needs a reader started. If one is at work, it is
// told to read again instead: no second goroutine waits on the first.
func (p *epoll) wake(c *Conn) bool {
	for {
		switch c.rstate.Load() {
		case readIdle:
			if c.rstate.CompareAndSwap(readIdle, readBusy) {
				return true
			}
		case readBusy:
			if c.rstate.CompareAndSwap(readBusy, readAgain) {
				return false
			}
		default:
			return false
		}
	}
}

// drained ends a reader's turn, unless bytes were reported while it read: then it reads
// again (the bytes may be those it has read already; the next read then finds nothing).
func (p *epoll) drained(c *Conn) bool {
	if c.rstate.CompareAndSwap(readBusy, readIdle) {
		return false
	}
	c.rstate.Store(readBusy)
	return true
}

func (p *epoll) remove(c *Conn) {
	p.mu.Lock()
	delete(p.conns, c.id)
	p.mu.Unlock()
	var ev unix.EpollEvent
	_ = c.rc.Control(func(fd uintptr) { _ = unix.EpollCtl(p.fd, unix.EPOLL_CTL_DEL, int(fd), &ev) })
}

func (p *epoll) run() {
	defer close(p.done)
	defer close(p.ready) // run is its only sender
	events := make([]unix.EpollEvent, 512)
	for {
		// The timeout only bounds how long close waits for this loop to notice.
		n, err := unix.EpollWait(p.fd, events, 200)
		if p.closed.Load() {
			return
		}
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			p.fail(err)
			return
		}
		for i := range n {
			id := uint64(uint32(events[i].Fd)) | uint64(uint32(events[i].Pad))<<32
			p.mu.RLock()
			c := p.conns[id]
			p.mu.RUnlock()
			if c == nil {
				continue
			}
			if events[i].Events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
				c.hup.Store(true) // before wake: the reader that sees the wake sees this
			}
			if !p.wake(c) {
				continue
			}
			select {
			case p.ready <- c:
			default:
				go c.readReady()
			}
		}
	}
}

func (p *epoll) close() {
	if p.closed.Swap(true) {
		return
	}
	<-p.done
	p.readers.Wait() // the pool's; a reader started beside it finds its connection closed
	_ = unix.Close(p.fd)
}

// readSome reads what the socket has without waiting: 0, nil means nothing yet.
func (c *Conn) readSome(buf []byte) (int, error) {
	var n int
	var rerr error
	err := c.rc.Read(func(fd uintptr) bool {
		for {
			n, rerr = unix.Read(int(fd), buf)
			if !errors.Is(rerr, unix.EINTR) {
				return true // never park: the poller tells us when there is more
			}
		}
	})
	switch {
	case err != nil:
		return 0, err
	case errors.Is(rerr, unix.EAGAIN):
		return 0, nil
	case rerr != nil:
		return 0, rerr
	case n == 0:
		return 0, errEOF
	}
	return n, nil
}
