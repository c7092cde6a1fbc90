// Package redistest starts a real redis-server (Debian's package: apt-get install -y redis-server) for
// tests, on a loopback port in a temporary folder, stopped when the test ends.
//
//	addr := redistest.Start(t) // "127.0.0.1:41234"
package redistest

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Server is a running redis-server.
type Server struct {
	// Addr is its loopback host:port.
	Addr string
	// Password is what clients must send with AUTH; empty when none is required.
	Password string

	cmd *exec.Cmd
}

// Options configure a server.
type Options struct {
	// Password, when set, is required (requirepass).
	Password string
}

// Start starts a redis-server without a password and returns its address.
func Start(tb testing.TB) string {
	tb.Helper()
	return StartServer(tb, Options{}).Addr
}

// StartServer starts a redis-server, stopped when the test ends. It fails tb, never skips, when
// redis-server is not installed: CI installs it (.ci/run) and a test that needs Redis must not pass
// without it.
func StartServer(tb testing.TB, o Options) *Server {
	tb.Helper()
	s, err := Run(tb.TempDir(), o)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.Stop)
	return s
}

// Run starts a redis-server keeping its files in dir, for a TestMain that shares one server between
// tests; the caller stops it.
func Run(dir string, o Options) (*Server, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("redis-server not found on PATH (%v): install it with `apt-get install -y redis-server`, as .ci/run does", err)
	}
	port, err := freePort()
	if err != nil {
		return nil, fmt.Errorf("find a free port for redis-server: %w", err)
	}
	conf := []string{
		"bind 127.0.0.1",
		fmt.Sprintf("port %d", port),
		"dir " + dir,
		"save \"\"",
		"appendonly no",
		"protected-mode yes",
		"daemonize no",
		"logfile " + filepath.Join(dir, "redis.log"),
	}
	if o.Password != "" {
		conf = append(conf, "requirepass "+o.Password)
	}
	confPath := filepath.Join(dir, "redis.conf")
	if err := os.WriteFile(confPath, []byte(strings.Join(conf, "\n")+"\n"), 0o600); err != nil {
		return nil, err
	}
	s := &Server{Addr: fmt.Sprintf("127.0.0.1:%d", port), Password: o.Password}
	s.cmd = exec.Command(bin, confPath)
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start redis-server: %w", err)
	}
	if err := s.waitReady(10 * time.Second); err != nil {
		s.Stop()
		log, _ := os.ReadFile(filepath.Join(dir, "redis.log"))
		return nil, fmt.Errorf("redis-server did not start: %v\n%s", err, log)
	}
	return s, nil
}

// Stop stops the server; clients then fail to connect. Calling it again does nothing.
func (s *Server) Stop() {
	if s.cmd.Process == nil || s.cmd.ProcessState != nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
}

// waitReady waits until the server answers PING (or asks for authentication).
func (s *Server) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", s.Addr, time.Second)
		if err == nil {
			_ = c.SetDeadline(time.Now().Add(time.Second))
			_, _ = c.Write([]byte("PING\r\n"))
			line, rerr := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if rerr == nil && (strings.HasPrefix(line, "+PONG") || strings.HasPrefix(line, "-NOAUTH")) {
				return nil
			}
			last = fmt.Errorf("answered %q, %v", line, rerr)
		} else {
			last = err
		}
		time.Sleep(20 * time.Millisecond)
	}
	return last
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
