package scheduler

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/types"

	"github.com/wasm-operator/wasm-operator/internal/hostapi"
)

// Target is a host that may run a Cluster tick.
type Target struct {
	// Node is the host's node, reported in the result.
	Node string
	// URL is the base of the host's call API, scheme://address:port (such as https://10.0.3.7:8181); the
	// call path is appended to it.
	URL string
}

// TargetsFunc lists the hosts that may run a tick of the plugin key: those Ready and serving generation.
type TargetsFunc func(ctx context.Context, key types.NamespacedName, generation int64) ([]Target, error)

// TokenFunc returns the bearer token for the hosts' audience. It is called for each attempt, so that a
// rotated token is picked up.
type TokenFunc func(ctx context.Context) (string, error)

// maxBody is how much of an answer's body a ClusterFirer reads for the message; maxDrain how much more it
// reads away so that the connection can be reused (the output of a scheduled function is not kept).
const (
	maxBody  = 4 << 10
	maxDrain = 64 << 10
)

// DefaultAttemptTimeout is ClusterFirer.AttemptTimeout's default: above the longest callTimeout a plugin may
// have (10m), so that a host is taken for dead only when it stopped answering, not for a slow function.
const DefaultAttemptTimeout = 10*time.Minute + 30*time.Second

// ClusterFirer fires Cluster ticks through the hosts' call API: one target per tick, picked round-robin
// (sorted by node, so that successive ticks spread over the hosts), and ONE other target when the first
// did not run the function (no answer, an attempt timeout, 404, 429 or a 5xx that is not the plugin's).
// A plugin error (502 with X-Plugin-Return-Code) and a call timeout (504: the function ran to its
// callTimeout) are results, not retried: the function ran, and running it again elsewhere would repeat its
// effects. So a tick runs at least once when a host is up, and more than once only when a host ran it but
// its answer was lost.
type ClusterFirer struct {
	// Targets lists the candidate hosts. Required.
	Targets TargetsFunc
	// Client makes the calls: its transport carries the hosts' CA. Default http.DefaultClient.
	Client *http.Client
	// Token authenticates the calls. Required.
	Token TokenFunc
	// AttemptTimeout bounds one attempt, so that a host that accepts the call and never answers leaves
	// time for the other. Default DefaultAttemptTimeout. Keep it above the plugins' callTimeout, or a slow
	// function is taken for a dead host and runs twice, and below half the Runner's Timeout.
	AttemptTimeout time.Duration

	next atomic.Uint64
}

// Fire is a FireFunc.
func (f *ClusterFirer) Fire(ctx context.Context, j Job) Result {
	targets, err := f.Targets(ctx, j.Plugin, j.Generation)
	if err != nil {
		return Result{ReturnCode: ReturnCodeNotRun, Message: "list the hosts serving the plugin: " + err.Error()}
	}
	if len(targets) == 0 {
		return Result{ReturnCode: ReturnCodeNotRun, Message: fmt.Sprintf("no Ready host serves generation %d of the plugin", j.Generation)}
	}
	targets = slices.SortedFunc(slices.Values(targets), func(a, b Target) int { return strings.Compare(a.Node, b.Node) })
	i := int(f.next.Add(1) % uint64(len(targets)))
	first := targets[i]
	res, retry := f.call(ctx, first, j)
	if !retry || len(targets) < 2 || ctx.Err() != nil {
		return res
	}
	second := targets[(i+1)%len(targets)]
	logr.FromContextOrDiscard(ctx).Info("host did not run the scheduled call: trying another", "node", first.Node, "other", second.Node, "reason", res.Message)
	res2, _ := f.call(ctx, second, j)
	if res2.Failed() && res2.ReturnCode == ReturnCodeNotRun {
		res2.Message = res.Message + "; then " + res2.Message
	}
	return res2
}

// call makes one attempt on t; retry says whether the function did not run there, so another host may.
func (f *ClusterFirer) call(ctx context.Context, t Target, j Job) (res Result, retry bool) {
	res = Result{ReturnCode: ReturnCodeNotRun, Node: t.Node}
	token, err := f.Token(ctx)
	if err != nil {
		res.Message = "get a token for the hosts: " + err.Error()
		return res, false
	}
	timeout := f.AttemptTimeout
	if timeout <= 0 {
		timeout = DefaultAttemptTimeout
	}
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	u := strings.TrimSuffix(t.URL, "/") + "/v1/namespaces/" + url.PathEscape(j.Plugin.Namespace) + "/wasmplugins/" +
		url.PathEscape(j.Plugin.Name) + "/call/" + url.PathEscape(j.Function)
	req, err := http.NewRequestWithContext(actx, http.MethodPost, u, bytes.NewReader(j.Input))
	if err != nil {
		res.Message = fmt.Sprintf("host %s: bad call API URL %q: %v", t.Node, t.URL, err)
		return res, true
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/octet-stream")
	// The tick first: the host keeps 64 characters of an id, and the tick tells the runs apart.
	req.Header.Set("X-Request-Id", strconv.FormatInt(j.Tick.Unix(), 10)+"-"+j.Schedule)
	c := f.Client
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		switch {
		case ctx.Err() != nil:
			res.Message = fmt.Sprintf("host %s: the run ended before the host answered: %v", t.Node, context.Cause(ctx))
			return res, false
		case errors.Is(actx.Err(), context.DeadlineExceeded):
			res.Message = fmt.Sprintf("host %s did not answer within %v", t.Node, timeout)
		default:
			res.Message = fmt.Sprintf("host %s did not answer: %v", t.Node, err)
		}
		return res, true
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrain))
	text := strings.TrimSpace(string(body))

	switch code := resp.StatusCode; {
	case code == http.StatusOK:
		return Result{Node: t.Node}, false
	case code == http.StatusBadGateway && resp.Header.Get("X-Plugin-Return-Code") != "":
		rc, err := strconv.ParseUint(resp.Header.Get("X-Plugin-Return-Code"), 10, 32)
		if err != nil {
			res.Message = fmt.Sprintf("host %s: bad X-Plugin-Return-Code %q: %s", t.Node, resp.Header.Get("X-Plugin-Return-Code"), text)
			return res, false
		}
		// Extism's return code is a wasm i32; the host sends it unsigned.
		return Result{ReturnCode: int32(uint32(rc)), Message: string(body), Node: t.Node}, false
	case code == http.StatusGatewayTimeout:
		res.Message = fmt.Sprintf("host %s: %s", t.Node, orStatus(text, code))
		return res, false
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		res.Message = fmt.Sprintf("host %s refused the controller's call (%d): %s; the controller needs a token of the hosts' audience and RBAC create on wasmplugins/call in %s",
			t.Node, code, orStatus(text, code), j.Plugin.Namespace)
		return res, false
	case code == http.StatusNotFound || code == http.StatusTooManyRequests || code >= 500:
		res.Message = fmt.Sprintf("host %s answered %d: %s", t.Node, code, orStatus(text, code))
		return res, true
	default:
		res.Message = fmt.Sprintf("host %s answered %d: %s", t.Node, code, orStatus(text, code))
		return res, false
	}
}

func orStatus(text string, code int) string {
	if text == "" {
		return http.StatusText(code)
	}
	return text
}

// NodeFirer returns the FireFunc of a host's Node Runner: it runs the job through inv, the host's own
// Invoker (what its call API serves), and maps the Invoker's errors to results as the call API maps them to
// statuses. node is the host's node, reported in the results.
func NodeFirer(node string, inv hostapi.Invoker) FireFunc {
	return func(ctx context.Context, j Job) Result {
		_, err := inv.Invoke(ctx, j.Plugin.Namespace, j.Plugin.Name, j.Function, j.Input)
		if err == nil {
			return Result{Node: node}
		}
		var perr *hostapi.PluginError
		if errors.As(err, &perr) {
			return Result{ReturnCode: int32(perr.Code), Message: perr.Message, Node: node}
		}
		msg := err.Error()
		switch {
		case errors.Is(err, hostapi.ErrNotServed):
			msg = "the plugin is not served on this node (yet)"
		case errors.Is(err, hostapi.ErrNoFunction):
			msg = fmt.Sprintf("the plugin exports no function %q", j.Function)
		case errors.Is(err, hostapi.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
			msg = "call timed out: " + msg
		}
		return Result{ReturnCode: ReturnCodeNotRun, Message: msg, Node: node}
	}
}
