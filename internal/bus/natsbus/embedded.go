package natsbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// defaultStartTimeout bounds the embedded server's start when ctx has no deadline.
const defaultStartTimeout = 10 * time.Second

// JetStream's limits on the embedded server: what its streams may hold in all, on disk under
// the data directory and in memory. Each stream has limits of its own (age, size) chosen
// with it; these bound their sum, so that no stream, however configured, fills the disk
// that the database needs.
const (
	jetStreamMaxStore  = 1 << 30
	jetStreamMaxMemory = 64 << 20
)

// Embedded starts a NATS server inside the process and returns a Bus connected to it in
// process. The server opens no port at all (DontListen): only this process can reach it, so
// it needs no authentication. JetStream is enabled and stores under dir, so durable streams
// (job queues) survive restarts. The server installs no signal handlers and logs through
// log: its notices at Debug (they are start-up chatter), its warnings and errors as such.
// Close shuts the server down and waits for it.
func Embedded(ctx context.Context, dir string, log *slog.Logger) (*Bus, error) {
	return embedded(ctx, dir, log, bufferSize)
}

// embedded is Embedded with the shared buffer's capacity as a parameter, for tests.
func embedded(ctx context.Context, dir string, log *slog.Logger, size int) (*Bus, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if dir == "" {
		return nil, errors.New("natsbus: embedded: empty JetStream store directory")
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("natsbus: embedded: %w", err)
	}
	start := time.Now()
	srv, err := server.NewServer(&server.Options{
		ServerName:         "parley-embedded",
		DontListen:         true,
		JetStream:          true,
		StoreDir:           dir,
		JetStreamMaxStore:  jetStreamMaxStore,
		JetStreamMaxMemory: jetStreamMaxMemory,
		NoSigs:             true,
	})
	if err != nil {
		return nil, fmt.Errorf("natsbus: embedded: configure server: %w", err)
	}
	sl := &serverLog{log: log.With("component", "nats-server")}
	srv.SetLoggerV2(sl, false, false, false)
	srv.Start() // returns once started: with DontListen there is no accept loop to wait for

	stop := func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	}
	// The server reports start-up failures (e.g. an unusable store directory) through
	// Fatalf and returns from Start; without this check ReadyForConnections would wait for
	// its whole timeout before failing with a less useful message.
	if msg := sl.fatal(); msg != "" {
		stop()
		return nil, fmt.Errorf("natsbus: embedded: start server (store %s): %s", dir, msg)
	}
	wait := defaultStartTimeout
	if dl, ok := ctx.Deadline(); ok {
		wait = time.Until(dl)
	}
	if !srv.ReadyForConnections(wait) {
		stop()
		return nil, fmt.Errorf("natsbus: embedded: server not ready after %s", wait)
	}

	b := newBus(log, size, srv) // DontListen: no other node can reach this server
	if err := b.connect(ctx, srv.ClientURL(), nats.InProcessServer(srv)); err != nil {
		stop()
		return nil, fmt.Errorf("natsbus: embedded: connect in process: %w", err)
	}
	log.Debug("bus: embedded NATS started", "store", dir, "took", time.Since(start))
	return b, nil
}

// serverLog routes nats-server's log to slog. Debug and trace lines are off (the server is
// told so), notices go to Debug, and a fatal error is kept for Embedded to report instead of
// exiting the process as the server's own logger would.
type serverLog struct {
	log *slog.Logger

	mu       sync.Mutex
	fatalMsg string
}

func (l *serverLog) logf(level slog.Level, format string, v []any) {
	if !l.log.Enabled(context.Background(), level) {
		return
	}
	l.log.Log(context.Background(), level, fmt.Sprintf(format, v...))
}

func (l *serverLog) Noticef(format string, v ...any) { l.logf(slog.LevelDebug, format, v) }
func (l *serverLog) Warnf(format string, v ...any)   { l.logf(slog.LevelWarn, format, v) }
func (l *serverLog) Errorf(format string, v ...any)  { l.logf(slog.LevelError, format, v) }
func (l *serverLog) Debugf(format string, v ...any)  { l.logf(slog.LevelDebug-4, format, v) }
func (l *serverLog) Tracef(format string, v ...any)  { l.logf(slog.LevelDebug-8, format, v) }

func (l *serverLog) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.mu.Lock()
	if l.fatalMsg == "" {
		l.fatalMsg = msg
	}
	l.mu.Unlock()
	l.log.Error(msg, "fatal", true)
}

// fatal returns the first fatal message logged, or "".
func (l *serverLog) fatal() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fatalMsg
}
