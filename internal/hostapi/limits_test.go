package hostapi

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// serveAuth serves a Server with authentication on (fake reviews) on a real loopback listener.
func serveAuth(t *testing.T, f *fakeReviews, mod func(*Options)) string {
	t.Helper()
	inv := &fakeInvoker{limits: map[string]int64{"allowed/p": 0}}
	s, _ := newTestServer(t, inv, func(o *Options) {
		o.DisableAuth, o.Kube = false, f.client()
		if mod != nil {
			mod(o)
		}
	})
	return strings.TrimPrefix(newHTTPServer(t, s), "http://")
}

// slowRequest opens a connection, sends the headers of a call whose 1000-byte body then comes one
// byte every 100ms, and returns when the server has answered and closed the connection, or the
// body is done.
func slowRequest(addr, token string) (status string, closedAfter time.Duration, err error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return "", 0, err
	}
	defer c.Close()
	start := time.Now()
	fmt.Fprintf(c, "POST /v1/namespaces/allowed/wasmplugins/p/call/run HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n")
	if token != "" {
		fmt.Fprintf(c, "Authorization: Bearer %s\r\n", token)
	}
	fmt.Fprintf(c, "\r\n")
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for range 1000 {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			if _, err := c.Write([]byte("x")); err != nil {
				return
			}
		}
	}()
	r := bufio.NewReader(c)
	line, _ := r.ReadString('\n')
	_, _ = io.Copy(io.Discard, r) // until the server closes
	return strings.TrimSpace(line), time.Since(start), nil
}

// TestSlowBodiesAreCut replays the issue: 50 connections without a valid token sending a body a byte
// at a time, and one with a valid token. The unauthenticated ones are answered 401 and closed at
// once, before their body; the authenticated one is cut at ReadTimeout, not served after 100s.
func TestSlowBodiesAreCut(t *testing.T) {
	f := &fakeReviews{}
	const readTimeout = time.Second
	addr := serveAuth(t, f, func(o *Options) { o.ReadTimeout = readTimeout })
	var wg sync.WaitGroup
	errs := make(chan string, 51)
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			token := ""
			if i%2 == 1 {
				token = jwtLike("forged")
			}
			status, after, err := slowRequest(addr, token)
			if err != nil || !strings.Contains(status, "401") || after > readTimeout {
				errs <- fmt.Sprintf("unauthenticated slow body: %q after %s (%v), want 401 and closed within %s", status, after, err, readTimeout)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		status, after, err := slowRequest(addr, jwtLike("good"))
		if err != nil || after > 3*readTimeout {
			errs <- fmt.Sprintf("authenticated slow body: %q after %s (%v), want the connection cut near %s", status, after, err, readTimeout)
		}
	}()
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// TestConnectionCap: beyond MaxConnections a new connection waits; it is served once one closes.
func TestConnectionCap(t *testing.T) {
	f := &fakeReviews{}
	addr := serveAuth(t, f, func(o *Options) { o.MaxConnections = 2 })
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// A request on each, so both are accepted and served (kept alive).
		fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		line, _ := bufio.NewReader(c).ReadString('\n')
		if !strings.Contains(line, "200") {
			t.Fatalf("held connection: %q", line)
		}
		held = append(held, c)
	}
	third, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	fmt.Fprintf(third, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	third.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	r := bufio.NewReader(third)
	if line, err := r.ReadString('\n'); err == nil {
		t.Fatalf("a third connection was served over the cap of 2: %q", line)
	}
	held[0].Close()
	third.SetReadDeadline(time.Now().Add(10 * time.Second))
	if line, err := r.ReadString('\n'); err != nil || !strings.Contains(line, "200") {
		t.Fatalf("after a connection closed, the waiting one got %q, %v", line, err)
	}
}

// TestTokenReviewFlood replays the issue: 500 requests with made-up tokens from one address. Tokens
// that are not JWTs cost no review; JWT-shaped ones cost at most the burst, then get 429. Every
// refusal closes its connection.
func TestTokenReviewFlood(t *testing.T) {
	f := &fakeReviews{}
	addr := serveAuth(t, f, func(o *Options) { o.TokenReviewBurst = 10; o.TokenReviewRate = 0.001 })
	call := func(token string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/v1/namespaces/allowed/wasmplugins/p/call/run", strings.NewReader("in"))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	random := func() string { b := make([]byte, 16); rand.Read(b); return hex.EncodeToString(b) }
	for range 250 {
		if resp := call(random()); resp.StatusCode != 401 || !resp.Close {
			t.Fatalf("random token: %d (close %v), want 401 and Connection: close", resp.StatusCode, resp.Close)
		}
	}
	if n := f.tokens.Load(); n != 0 {
		t.Fatalf("250 tokens that are not JWTs made %d TokenReviews, want 0", n)
	}
	throttled := 0
	for range 250 {
		resp := call(jwtLike(random()))
		switch {
		case resp.StatusCode == 429 && resp.Header.Get("Retry-After") != "" && resp.Close:
			throttled++
		case resp.StatusCode == 401 && resp.Close:
		default:
			t.Fatalf("forged JWT: %d, Retry-After %q, close %v", resp.StatusCode, resp.Header.Get("Retry-After"), resp.Close)
		}
	}
	if n := f.tokens.Load(); n > 10 {
		t.Errorf("250 forged JWTs made %d TokenReviews, want at most the burst of 10", n)
	}
	if throttled < 240 {
		t.Errorf("%d of 250 forged JWTs throttled, want at least 240", throttled)
	}
	// A token already reviewed is answered from the cache, throttled address or not.
	if resp := call(jwtLike("good")); resp.StatusCode != 429 {
		t.Fatalf("an unreviewed good token from a throttled address: %d, want 429", resp.StatusCode)
	}
}

// TestWellFormedJWT: what is refused before any review.
func TestWellFormedJWT(t *testing.T) {
	for tok, want := range map[string]bool{
		jwtLike("x"):                      true,
		"not-a-token":                     false,
		"a.b":                             false,
		"a.b.c":                           false, // header is not JSON
		jwtLike("x") + ".d":               false,
		strings.Repeat("a", 20000):        false,
		"eyJhbGciOiJSUzI1NiJ9..c2ln":      false,
		"eyJhbGciOiJSUzI1NiJ9.e30.c2l+":   false,
		"eyJ0eXAiOiJKV1QifQ.e30.c2ln":     false, // no alg
		"eyJhbGciOiJSUzI1NiJ9.e30.c2ln":   true,
		"eyJhbGciOiJSUzI1NiJ9.e30.c2ln\n": false,
	} {
		if got := wellFormedJWT(tok); got != want {
			t.Errorf("wellFormedJWT(%.40q) = %v, want %v", tok, got, want)
		}
	}
}
