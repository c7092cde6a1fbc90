package scheduler

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"

	wasmv1 "github.com/wasm-operator/wasm-operator/api/v1alpha1"
	"github.com/wasm-operator/wasm-operator/internal/hostapi"
)

// host is a fake node host's call API that answers every call with status (and for 502 the plugin's
// return code), after checking what the call API needs.
type host struct {
	t      *testing.T
	srv    *httptest.Server
	calls  atomic.Int32
	status int
	hang   bool // answer only when the caller gives up
}

func newHost(t *testing.T, status int) *host {
	h := &host{t: t, status: status}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.calls.Add(1)
		body, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || r.URL.EscapedPath() != "/v1/namespaces/shop/wasmplugins/warmer/call/warm%20up" ||
			r.Header.Get("Authorization") != "Bearer tok" || string(body) != `{"n":1}` ||
			r.Header.Get("X-Request-Id") != "1796126460-a" {
			t.Errorf("bad call: %s %s %q %q %q", r.Method, r.URL.EscapedPath(), r.Header.Get("Authorization"), body, r.Header.Get("X-Request-Id"))
		}
		if h.hang {
			<-r.Context().Done()
			return
		}
		switch h.status {
		case http.StatusBadGateway:
			w.Header().Set("X-Plugin-Return-Code", "4294967295")
			w.WriteHeader(h.status)
			_, _ = io.WriteString(w, "cache backend unreachable")
		case http.StatusOK:
			_, _ = io.WriteString(w, "warmed")
		default:
			http.Error(w, http.StatusText(h.status)+" from the host", h.status)
		}
	}))
	t.Cleanup(h.srv.Close)
	return h
}

// down is the URL of a host that is gone: connections are refused.
func down(t *testing.T) string {
	srv := httptest.NewServer(http.NotFoundHandler())
	u := srv.URL
	srv.Close()
	return u
}

func testJob() Job {
	return Job{Plugin: key, Generation: 7, Schedule: "a", Scope: wasmv1.ScheduleScopeCluster, Function: "warm up",
		Input: []byte(`{"n":1}`), Tick: time.Date(2026, 12, 1, 12, 1, 0, 0, time.UTC)}
}

func firer(targets ...Target) *ClusterFirer {
	return &ClusterFirer{
		Targets: func(_ context.Context, k types.NamespacedName, gen int64) ([]Target, error) {
			if k != key || gen != 7 {
				return nil, errors.New("wrong plugin or generation")
			}
			return targets, nil
		},
		Token: func(context.Context) (string, error) { return "tok", nil },
	}
}

func TestClusterFirer(t *testing.T) {
	for _, c := range []struct {
		name string
		// first is the status of node-a (0: down), second of node-b
		first, second int
		// want: the result of each of two fires (the round-robin starts on each node once), and the calls
		// each host got
		rc             int32
		msg            []string
		node           string
		callsA, callsB int32
	}{
		{"both up", 200, 200, 0, nil, "", 1, 1},
		{"a down: fails over to b", 0, 200, 0, nil, "node-b", 0, 2},
		{"a 503: fails over to b", 503, 200, 0, nil, "node-b", 1, 2},
		{"a 404 (not served yet): fails over", 404, 200, 0, nil, "node-b", 1, 2},
		{"a saturated: fails over", 429, 200, 0, nil, "node-b", 1, 2},
		{"plugin error: a result, no retry", 502, 502, -1, []string{"cache backend unreachable"}, "", 1, 1},
		{"call timeout: a result, no retry", 504, 504, ReturnCodeNotRun, []string{"Gateway Timeout from the host"}, "", 1, 1},
		{"forbidden: no retry, RBAC named", 403, 403, ReturnCodeNotRun, []string{"host node-", "refused the controller's call (403)", "RBAC create on wasmplugins/call in shop"}, "", 1, 1},
		{"both failing: both named", 500, 0, ReturnCodeNotRun, []string{"host node-a answered 500: Internal Server Error from the host", "; then host node-", "host node-b did not answer"}, "", 2, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			targets := make([]Target, 2)
			hosts := make([]*host, 2)
			for i, st := range []int{c.first, c.second} {
				node := []string{"node-a", "node-b"}[i]
				if st == 0 {
					targets[i] = Target{Node: node, URL: down(t)}
					continue
				}
				hosts[i] = newHost(t, st)
				targets[i] = Target{Node: node, URL: hosts[i].srv.URL + "/"}
			}
			// Listed out of order: the firer sorts by node.
			f := firer(targets[1], targets[0])
			for range 2 {
				res := f.Fire(context.Background(), testJob())
				if res.ReturnCode != c.rc || !containsAll(res.Message, c.msg) || (c.node != "" && res.Node != c.node) {
					t.Errorf("Fire = %+v; want code %d, message with %q, node %q", res, c.rc, c.msg, c.node)
				}
				if (c.rc == 0 && c.msg == nil) == res.Failed() {
					t.Errorf("Failed() = %v for %+v", res.Failed(), res)
				}
			}
			for i, want := range []int32{c.callsA, c.callsB} {
				if hosts[i] == nil {
					continue
				}
				if got := hosts[i].calls.Load(); got != want {
					t.Errorf("host %d got %d calls, want %d", i, got, want)
				}
			}
		})
	}
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// With every host failing, a tick tries two of them, and no more.
func TestClusterFirerTriesOneOther(t *testing.T) {
	a, b, c := newHost(t, 503), newHost(t, 503), newHost(t, 503)
	f := firer(Target{"node-a", a.srv.URL}, Target{"node-b", b.srv.URL}, Target{"node-c", c.srv.URL})
	res := f.Fire(context.Background(), testJob())
	if res.ReturnCode != ReturnCodeNotRun || strings.Count(res.Message, "answered 503") != 2 {
		t.Fatalf("Fire = %+v", res)
	}
	if n := a.calls.Load() + b.calls.Load() + c.calls.Load(); n != 2 {
		t.Fatalf("%d attempts, want 2", n)
	}
}

// A host that accepts the call and never answers is given AttemptTimeout, then the other host runs it.
func TestClusterFirerAttemptTimeout(t *testing.T) {
	hung, ok := newHost(t, 200), newHost(t, 200)
	hung.hang = true
	f := firer(Target{"node-a", hung.srv.URL}, Target{"node-b", ok.srv.URL})
	f.AttemptTimeout = 100 * time.Millisecond
	f.next.Store(1) // start on node-a
	res := f.Fire(context.Background(), testJob())
	if res.Failed() || res.Node != "node-b" || hung.calls.Load() != 1 || ok.calls.Load() != 1 {
		t.Fatalf("Fire = %+v, calls %d %d", res, hung.calls.Load(), ok.calls.Load())
	}
}

// When the run itself ends (its timeout, or the Runner stops), no other host is tried.
func TestClusterFirerRunEnds(t *testing.T) {
	hung, ok := newHost(t, 200), newHost(t, 200)
	hung.hang = true
	f := firer(Target{"node-a", hung.srv.URL}, Target{"node-b", ok.srv.URL})
	f.next.Store(1)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	res := f.Fire(ctx, testJob())
	if !strings.Contains(res.Message, "the run ended before the host answered") || ok.calls.Load() != 0 {
		t.Fatalf("Fire = %+v, calls on the other %d", res, ok.calls.Load())
	}
}

func TestClusterFirerNoTarget(t *testing.T) {
	f := firer()
	if res := f.Fire(context.Background(), testJob()); res.ReturnCode != ReturnCodeNotRun || res.Message != "no Ready host serves generation 7 of the plugin" {
		t.Fatalf("Fire = %+v", res)
	}
	f.Targets = func(context.Context, types.NamespacedName, int64) ([]Target, error) {
		return nil, errors.New("cache not synced")
	}
	if res := f.Fire(context.Background(), testJob()); !strings.Contains(res.Message, "list the hosts serving the plugin: cache not synced") {
		t.Fatalf("Fire = %+v", res)
	}
	h := newHost(t, 200)
	f = firer(Target{"node-a", h.srv.URL})
	f.Token = func(context.Context) (string, error) { return "", errors.New("TokenRequest forbidden") }
	if res := f.Fire(context.Background(), testJob()); !strings.Contains(res.Message, "get a token for the hosts: TokenRequest forbidden") || h.calls.Load() != 0 {
		t.Fatalf("Fire = %+v", res)
	}
}

type invoker func() error

func (f invoker) MaxInputBytes(string, string) (int64, bool) { return 0, true }
func (f invoker) Invoke(context.Context, string, string, string, []byte) ([]byte, error) {
	return nil, f()
}

func TestNodeFirer(t *testing.T) {
	for _, c := range []struct {
		err  error
		rc   int32
		msg  string
		fail bool
	}{
		{nil, 0, "", false},
		{&hostapi.PluginError{Code: 3, Message: "no cache"}, 3, "no cache", true},
		{hostapi.ErrNotServed, ReturnCodeNotRun, "the plugin is not served on this node (yet)", true},
		{hostapi.ErrNoFunction, ReturnCodeNotRun, `the plugin exports no function "warm up"`, true},
		{hostapi.ErrTimeout, ReturnCodeNotRun, "call timed out: call timed out", true},
	} {
		res := NodeFirer("node-a", invoker(func() error { return c.err }))(context.Background(), testJob())
		if res.ReturnCode != c.rc || res.Message != c.msg || res.Node != "node-a" || res.Failed() != c.fail {
			t.Errorf("%v: %+v", c.err, res)
		}
	}
}

func TestCutMessage(t *testing.T) {
	long := strings.Repeat("é", 2000)
	for _, c := range []struct {
		in        string
		wantRunes int
		wantEnd   string
	}{
		{"short", 5, "short"},
		{strings.Repeat("x", MaxMessage), MaxMessage, "x"},
		{long, MaxMessage, "é…"},
		{"bad \xff byte", 10, "\uFFFD byte"},
	} {
		got := CutMessage(c.in)
		if n := len([]rune(got)); n != c.wantRunes || !strings.HasSuffix(got, c.wantEnd) {
			t.Errorf("CutMessage(%.20q) = %d characters ending %.10q", c.in, n, got[len(got)-min(len(got), 10):])
		}
	}
}
