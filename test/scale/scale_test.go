// Package scale measures the status path at cluster scale against the real API server of the test control
// plane: a real `manager controller` process, a few real `manager host` processes serving calls, and many
// simulated hosts, which run the host's real reconcile, Lease and report code in this process with plugin
// loading replaced by an instant stand-in (as kwok stands in for kubelets). `make bench-scale` runs it:
//
//	make bench-scale NODES=1000 PLUGINS=100 REAL_HOSTS=5
//
// It prints one line:
//
//	scale: nodes=N plugins=P ready_s=S steady_writes_per_s=W rollout_writes=R max_object_bytes=B controller_cpu_s=C
//
// ready_s is from applying the plugins to all of them Ready on every node; steady_writes_per_s counts every
// write the API server took (any resource, any client) per second over a minute of call load on the real
// hosts; rollout_writes counts the writes to WasmPlugins and WasmHosts from one plugin's new spec to every
// node serving it; max_object_bytes is the largest WasmPlugin or WasmHost in JSON; controller_cpu_s is the
// controller process's CPU time over the run.
package scale

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	wasmv1 "github.com/wasm-operator/wasm-operator/api/v1alpha1"
	"github.com/wasm-operator/wasm-operator/controllers/host"
	"github.com/wasm-operator/wasm-operator/internal/devstack"
	"github.com/wasm-operator/wasm-operator/internal/testenv"
)

var (
	nodes     = flag.Int("nodes", 1000, "nodes in all: simulated hosts plus -real-hosts")
	plugins   = flag.Int("plugins", 100, "WasmPlugins, each placed on every node")
	realHosts = flag.Int("real-hosts", 5, "real `manager host` processes, under call load")
	steady    = flag.Duration("steady", time.Minute, "the steady window over which writes are counted")
)

func BenchmarkScale(b *testing.B) {
	for range b.N {
		run(b)
	}
}

// progress tells where a long run is, on stderr.
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+format+"\n", args...)
}

func run(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := b.TempDir()
	s, err := devstack.Start(ctx, devstack.Options{Dir: dir})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Stop()
	// The plugin every host loads: shout, 285 bytes, so that the real hosts load a hundred of them cheaply.
	wasm, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "examples", "shout", "shout.wasm"))
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "plugins", "shout.wasm"), wasm, 0o644); err != nil {
		b.Fatal(err)
	}
	ctl, err := s.StartController()
	if err != nil {
		b.Fatal(err)
	}
	var addrs []string
	for i := range *realHosts {
		addr, _ := devstack.FreePort()
		node := fmt.Sprintf("real-%d", i)
		if _, err := s.StartHost(node, addr, "--auth=false"); err != nil {
			b.Fatal(err)
		}
		addrs = append(addrs, addr)
	}
	sims := *nodes - *realHosts
	startSimulated(ctx, b, s, sims)
	waitFor(b, 5*time.Minute, "every host registered", func() (bool, string) {
		var list wasmv1.WasmHostList
		if err := s.Client.List(ctx, &list); err != nil {
			return false, err.Error()
		}
		return len(list.Items) == *nodes, fmt.Sprintf("%d/%d WasmHosts", len(list.Items), *nodes)
	})

	progress("%d hosts registered (%d writes so far)", *nodes, writes(b, s.Config).total)
	// Apply the plugins, as a GitOps sync would, and wait for all of them on every node.
	start := time.Now()
	for i := range *plugins {
		p := &wasmv1.WasmPlugin{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: fmt.Sprintf("p-%03d", i)},
			Spec: wasmv1.WasmPluginSpec{Source: wasmv1.Source{HTTP: &wasmv1.HTTPSource{URL: s.PluginsURL + "/shout.wasm"}}}}
		if err := s.Client.Create(ctx, p); err != nil {
			b.Fatal(err)
		}
	}
	allReady := func() (bool, string) {
		var list wasmv1.WasmPluginList
		if err := s.Client.List(ctx, &list); err != nil {
			return false, err.Error()
		}
		n := 0
		for i := range list.Items {
			if updatedEverywhere(&list.Items[i], *nodes) {
				n++
			}
		}
		return n == *plugins, fmt.Sprintf("%d/%d plugins Ready on %d nodes", n, *plugins, *nodes)
	}
	waitFor(b, 10*time.Minute, "all plugins Ready", allReady)
	readyS := time.Since(start).Seconds()
	progress("all plugins Ready on every node after %.1fs", readyS)

	// Steady state under call load: what the API server takes is Lease renewals, and nothing from calls.
	var calls, failed atomic.Int64
	loadCtx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i, addr := range addrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			callLoop(loadCtx, addr, *plugins, i, &calls, &failed)
		}()
	}
	time.Sleep(5 * time.Second) // the last reports of the ready phase settle; the window starts after
	before := writes(b, s.Config)
	time.Sleep(*steady)
	after := writes(b, s.Config)
	stopLoad()
	wg.Wait()
	steadyWrites := float64(after.total-before.total) / steady.Seconds()
	steadyBy := map[string]int64{}
	for r, n := range after.byResource {
		if d := n - before.byResource[r]; d > 0 {
			steadyBy[r] = d
		}
	}
	if calls.Load() == 0 || failed.Load() > 0 {
		b.Fatalf("call load: %d calls, %d failed", calls.Load(), failed.Load())
	}

	progress("steady: %.1f writes/s, %d calls", steadyWrites, calls.Load())
	// A rollout: one plugin's new spec reaches every node.
	before = writes(b, s.Config)
	var p wasmv1.WasmPlugin
	if err := s.Client.Get(ctx, client.ObjectKey{Namespace: "default", Name: "p-000"}, &p); err != nil {
		b.Fatal(err)
	}
	p.Spec.Config = map[string]string{"rollout": "2"}
	if err := s.Client.Update(ctx, &p); err != nil {
		b.Fatal(err)
	}
	waitFor(b, 5*time.Minute, "the rollout on every node", func() (bool, string) {
		var q wasmv1.WasmPlugin
		if err := s.Client.Get(ctx, client.ObjectKey{Namespace: "default", Name: "p-000"}, &q); err != nil {
			return false, err.Error()
		}
		return q.Generation == p.Generation && updatedEverywhere(&q, *nodes), q.Status.NodeSummary
	})
	after = writes(b, s.Config)
	rollout := after.status - before.status
	progress("rollout: %d writes (%d refused during the run)", rollout, after.refused)

	maxBytes := 0
	var wps wasmv1.WasmPluginList
	var whs wasmv1.WasmHostList
	if err := s.Client.List(ctx, &wps); err != nil {
		b.Fatal(err)
	}
	if err := s.Client.List(ctx, &whs); err != nil {
		b.Fatal(err)
	}
	for i := range wps.Items {
		maxBytes = max(maxBytes, jsonSize(&wps.Items[i]))
	}
	for i := range whs.Items {
		maxBytes = max(maxBytes, jsonSize(&whs.Items[i]))
	}
	line := fmt.Sprintf("scale: nodes=%d plugins=%d ready_s=%.1f steady_writes_per_s=%.1f rollout_writes=%d max_object_bytes=%d controller_cpu_s=%.1f",
		*nodes, *plugins, readyS, steadyWrites, rollout, maxBytes, cpuSeconds(b, ctl.PID()))
	fmt.Println(line)
	b.Logf("%s (calls in the steady window %d; its writes by resource: %v)", line, calls.Load(), steadyBy)
	b.ReportMetric(readyS, "ready_s")
	b.ReportMetric(steadyWrites, "steady_writes/s")
	b.ReportMetric(float64(rollout), "rollout_writes")
	b.ReportMetric(float64(maxBytes), "max_object_bytes")
}

// updatedEverywhere reports whether p is Ready at its generation with every one of n nodes serving it.
func updatedEverywhere(p *wasmv1.WasmPlugin, n int) bool {
	c := meta.FindStatusCondition(p.Status.Conditions, wasmv1.ConditionReady)
	return c != nil && c.Status == metav1.ConditionTrue && c.ObservedGeneration == p.Generation &&
		p.Status.UpdatedNodes == int32(n) && p.Status.TargetNodes == int32(n)
}

// startSimulated runs n simulated hosts in one manager: each is the real host reconciler with its Lease
// keeper and reporter, sharing one cache and one client, as n nodes' hosts would each have their own.
//
// They act as the hosts' ServiceAccount, not as the cluster admin the test holds: the API server's priority
// and fairness then queues their requests as it queues a real cluster's hosts (one flow of the
// workload-low level), apart from the controller's.
func startSimulated(ctx context.Context, b *testing.B, s *devstack.Stack, n int) {
	const account = "wasm-operator-host"
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: account, Namespace: devstack.Namespace}}
	crb := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "simulated-hosts"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "cluster-admin"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: account, Namespace: devstack.Namespace}}}
	for _, o := range []client.Object{sa, crb} {
		if err := s.Client.Create(ctx, o); err != nil {
			b.Fatal(err)
		}
	}
	cfg := rest.CopyConfig(s.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + devstack.Namespace + ":" + account,
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + devstack.Namespace, "system:authenticated"}}
	cfg.QPS, cfg.Burst = 20*float32(n), 40*n // n hosts, each with client-go's default of 20 QPS
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{Scheme: newScheme(), Metrics: metricsserver.Options{BindAddress: "0"},
		Controller: ctrlconfig.Controller{SkipNameValidation: ptr.To(true)}})
	if err != nil {
		b.Fatal(err)
	}
	for i := range n {
		node := fmt.Sprintf("sim-%04d", i)
		r := &host.Reconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Node: node, Identity: node + "-pod",
			Namespace: devstack.Namespace, Loader: &host.InstantLoader{}, Name: "host-" + node}
		if err := r.SetupWithManager(mgr); err != nil {
			b.Fatal(err)
		}
	}
	go func() {
		if err := mgr.Start(ctx); err != nil {
			b.Errorf("simulated hosts: %v", err)
		}
	}()
}

// callLoop calls the plugins of one real host in turn until ctx ends.
func callLoop(ctx context.Context, addr string, plugins, seed int, calls, failed *atomic.Int64) {
	c := &http.Client{Timeout: 10 * time.Second}
	for i := seed; ctx.Err() == nil; i++ {
		url := fmt.Sprintf("http://%s/v1/namespaces/default/wasmplugins/p-%03d/call/shout", addr, i%plugins)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader("hello"))
		resp, err := c.Do(req)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			failed.Add(1)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(body) != "HELLO" {
			failed.Add(1)
			continue
		}
		calls.Add(1)
	}
}

// writeCounts are the API server's writes so far: all of them, those to WasmPlugins and WasmHosts, and
// by resource.
type writeCounts struct {
	total, status, refused int64
	byResource             map[string]int64
}

// writes reads apiserver_request_total from the API server's /metrics.
func writes(b *testing.B, cfg *rest.Config) writeCounts {
	rc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		b.Fatal(err)
	}
	resp, err := rc.Get(strings.TrimSuffix(cfg.Host, "/") + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		b.Fatal(err)
	}
	out := writeCounts{byResource: map[string]int64{}}
	fam, ok := families["apiserver_request_total"]
	if !ok {
		b.Fatal("the API server's /metrics has no apiserver_request_total")
	}
	for _, m := range fam.Metric {
		l := labels(m)
		switch l["verb"] {
		case "POST", "PUT", "PATCH", "DELETE", "APPLY":
		default:
			continue
		}
		n := int64(m.GetCounter().GetValue())
		if !strings.HasPrefix(l["code"], "2") {
			// Refused (a conflict, priority and fairness's 429): the write did not happen, and the
			// client's retry is counted when it succeeds.
			out.refused += n
			continue
		}
		out.total += n
		out.byResource[l["resource"]] += n
		if l["resource"] == "wasmplugins" || l["resource"] == "wasmhosts" {
			out.status += n
		}
	}
	return out
}

func labels(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.Label {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

func jsonSize(o any) int {
	var buf bytes.Buffer
	_ = json.NewEncoder(&buf).Encode(o)
	return buf.Len()
}

// cpuSeconds is a process's user and system CPU time, from /proc/<pid>/stat.
func cpuSeconds(b *testing.B, pid int) float64 {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// The command name, in parentheses, may hold spaces: fields count from after it.
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+2:]))
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100 // clock ticks, 100 per second on Linux
}

func waitFor(b *testing.B, timeout time.Duration, what string, cond func() (bool, string)) {
	b.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, msg := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s: not true after %s: %s", what, timeout, msg)
		}
		time.Sleep(250 * time.Millisecond)
	}
}
