package loadgen

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"time"
)

// Server is a `parley serve` running as a child process: the load generator's own server,
// and the crash tests' victim.
type Server struct {
	Cmd  *exec.Cmd
	URL  string // http://host:port
	Addr string // host:port
	// DebugURL is the server's debug listener (http://host:port), if it was given
	// --debug-listen.
	DebugURL string
	done     chan struct{}
}

// StartServer runs `exe serve --listen 127.0.0.1:0 --data data --log-json args...` and
// returns once it listens and answers /readyz. Warnings and errors it logs are copied to
// stderr. args may override --listen (the last one counts).
func StartServer(ctx context.Context, exe, data string, args ...string) (*Server, error) {
	cmd := exec.Command(exe, append([]string{"serve", "--listen", "127.0.0.1:0", "--data", data, "--log-json"}, args...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &Server{Cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(s.done) }()
	addr := make(chan [2]string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		var debug string
		for sc.Scan() {
			var line struct {
				Msg    string `json:"msg"`
				Listen string `json:"listen"`
				Level  string `json:"level"`
			}
			err := json.Unmarshal(sc.Bytes(), &line)
			switch {
			case err == nil && line.Msg == "debug server":
				debug = "http://" + line.Listen // logged before "parley started"
			case err == nil && line.Msg == "parley started":
				addr <- [2]string{line.Listen, debug}
			case line.Level == "ERROR" || line.Level == "WARN":
				fmt.Fprintln(os.Stderr, "server:", sc.Text())
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
	}()
	select {
	case a := <-addr:
		s.Addr, s.DebugURL = a[0], a[1]
	case <-s.done:
		return nil, errors.New("server exited before it was listening")
	case <-time.After(30 * time.Second):
		s.Kill()
		return nil, errors.New("server did not start within 30s")
	case <-ctx.Done():
		s.Kill()
		return nil, ctx.Err()
	}
	s.URL = "http://" + s.Addr
	resp, err := http.Get(s.URL + "/readyz")
	if err == nil {
		resp.Body.Close()
	}
	if err != nil || resp.StatusCode != http.StatusOK {
		s.Kill()
		return nil, fmt.Errorf("server not ready: %v", err)
	}
	return s, nil
}

// PID is the server's process id.
func (s *Server) PID() int { return s.Cmd.Process.Pid }

// Stop asks the server to shut down gracefully (SIGINT) and waits, killing it after 15 s.
func (s *Server) Stop() {
	_ = s.Cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.done:
	case <-time.After(15 * time.Second):
		s.Kill()
	}
}

// Kill ends the server with SIGKILL, as a crash would, and waits for it.
func (s *Server) Kill() {
	_ = s.Cmd.Process.Kill()
	<-s.done
}
