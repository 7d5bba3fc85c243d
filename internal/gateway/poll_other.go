//go:build !linux

package gateway

import "sync"

// goroutinePoller is the portable fallback for systems without epoll: one goroutine per
// connection, blocked in Read. It keeps Parley running on a laptop of any OS; the memory
// targets are for Linux, where the epoll poller is used.
type goroutinePoller struct {
	mu     sync.Mutex
	resume map[uint64]chan struct{}
}

func newPoller(func(error)) (poller, error) {
	return &goroutinePoller{resume: make(map[uint64]chan struct{})}, nil
}

func (p *goroutinePoller) add(c *Conn) error {
	ch := make(chan struct{}, 1)
	p.mu.Lock()
	p.resume[c.id] = ch
	p.mu.Unlock()
	go func() {
		for {
			c.readReady()
			if _, ok := <-ch; !ok {
				return
			}
		}
	}()
	return nil
}

func (p *goroutinePoller) drained(c *Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if ch := p.resume[c.id]; ch != nil {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	return false
}

func (p *goroutinePoller) remove(c *Conn) {
	p.mu.Lock()
	if ch := p.resume[c.id]; ch != nil {
		close(ch)
		delete(p.resume, c.id)
	}
	p.mu.Unlock()
}

func (p *goroutinePoller) close() {}

func (c *Conn) readSome(buf []byte) (int, error) {
	n, err := c.nc.Read(buf)
	if n > 0 {
		return n, nil
	}
	if err == nil {
		return 0, nil
	}
	return 0, err
}
