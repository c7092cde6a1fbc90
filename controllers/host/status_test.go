package host

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	wasmv1 "github.com/wasm-operator/wasm-operator/api/v1alpha1"
	"github.com/wasm-operator/wasm-operator/controllers"
	"github.com/wasm-operator/wasm-operator/internal/hostcontract"
	"github.com/wasm-operator/wasm-operator/internal/source"
	"github.com/wasm-operator/wasm-operator/internal/store"
	"github.com/wasm-operator/wasm-operator/internal/testenv"
	"github.com/wasm-operator/wasm-operator/runtime"
)

const statusNS = "wasm-system"

// statusEnv is a control plane with the real controller and room for hosts of the real host reconciler,
// whose plugin loading is the instant stand-in.
type statusEnv struct {
	t      *testing.T
	cfg    *rest.Config
	scheme *k8sruntime.Scheme
	c      client.Client
}

func newStatusEnv(t *testing.T) *statusEnv {
	t.Helper()
	env, cfg, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	scheme := k8sruntime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = wasmv1.AddToScheme(scheme)
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, o := range []client.Object{&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: statusNS}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}}} {
		if err := c.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	e := &statusEnv{t: t, cfg: cfg, scheme: scheme, c: c}
	e.startController()
	return e
}

func (e *statusEnv) manager() ctrl.Manager {
	e.t.Helper()
	mgr, err := ctrl.NewManager(e.cfg, ctrl.Options{Scheme: e.scheme, Metrics: metricsserver.Options{BindAddress: "0"},
		Controller: ctrlConfigSkipNames()})
	if err != nil {
		e.t.Fatal(err)
	}
	return mgr
}

func (e *statusEnv) startController() {
	t := e.t
	dir := t.TempDir()
	st, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	eng, err := runtime.NewEngine(context.Background(), runtime.EngineConfig{CacheDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = eng.Close(context.Background()) })
	mgr := e.manager()
	r := &controllers.WasmPluginReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(),
		Fetcher: &source.Fetcher{}, Store: st, Engine: eng, HostNamespace: statusNS}
	if err := r.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	e.run(mgr)
}

// run starts mgr and returns its stop, which waits for it to end; the test's end stops it too.
func (e *statusEnv) run(mgr ctrl.Manager) func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := mgr.Start(ctx); err != nil {
			e.t.Errorf("manager: %v", err)
		}
	}()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	e.t.Cleanup(stop)
	return stop
}

// host is one host process of node-a: a manager with the real host reconciler.
type testHost struct {
	r    *Reconciler
	stop func()
}

func (e *statusEnv) startHost(identity string) *testHost {
	mgr := e.manager()
	r := &Reconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Node: "node-a", Identity: identity,
		Namespace: statusNS, Loader: &InstantLoader{}, LeaseDuration: 20 * time.Second,
		ReportInterval: 200 * time.Millisecond, Name: "host-" + identity}
	if err := r.SetupWithManager(mgr); err != nil {
		e.t.Fatal(err)
	}
	return &testHost{r: r, stop: e.run(mgr)}
}

// watchPlugin counts the writes of a WasmPlugin and its Ready transitions from now on.
type pluginWatch struct {
	mu          sync.Mutex
	writes      int
	transitions []string
}

func (e *statusEnv) watchPlugin(name string) *pluginWatch {
	t := e.t
	var list wasmv1.WasmPluginList
	wc, err := client.NewWithWatch(e.cfg, client.Options{Scheme: e.scheme})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.c.List(context.Background(), &list, client.InNamespace("default")); err != nil {
		t.Fatal(err)
	}
	w, err := wc.Watch(context.Background(), &wasmv1.WasmPluginList{}, client.InNamespace("default"),
		&client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: list.ResourceVersion}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	pw := &pluginWatch{}
	last := ""
	for _, p := range list.Items {
		if p.Name == name {
			last = readyOf(&p)
		}
	}
	go func() {
		for ev := range w.ResultChan() {
			p, ok := ev.Object.(*wasmv1.WasmPlugin)
			if !ok || p.Name != name || ev.Type != watch.Modified {
				continue
			}
			pw.mu.Lock()
			pw.writes++
			if r := readyOf(p); r != last {
				pw.transitions = append(pw.transitions, r)
				last = r
			}
			pw.mu.Unlock()
		}
	}()
	return pw
}

func (pw *pluginWatch) counts() (int, []string) {
	pw.mu.Lock()
	defer pw.mu.Unlock()
	return pw.writes, append([]string(nil), pw.transitions...)
}

func readyOf(p *wasmv1.WasmPlugin) string {
	if c := meta.FindStatusCondition(p.Status.Conditions, wasmv1.ConditionReady); c != nil {
		return string(c.Status)
	}
	return ""
}

func (e *statusEnv) waitFor(what string, cond func() (bool, string)) {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ok, msg := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s: not true after 30s: %s", what, msg)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (e *statusEnv) plugin(name string) *wasmv1.WasmPlugin {
	var p wasmv1.WasmPlugin
	if err := e.c.Get(context.Background(), client.ObjectKey{Namespace: "default", Name: name}, &p); err != nil {
		e.t.Fatal(err)
	}
	return &p
}

func (e *statusEnv) lease() *coordinationv1.Lease {
	var l coordinationv1.Lease
	err := e.c.Get(context.Background(), client.ObjectKey{Namespace: statusNS, Name: hostcontract.LeaseName("node-a")}, &l)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return &l
}

func (e *statusEnv) report() *wasmv1.WasmHost {
	var h wasmv1.WasmHost
	if err := e.c.Get(context.Background(), client.ObjectKey{Name: "node-a"}, &h); err != nil {
		e.t.Fatal(err)
	}
	return &h
}

// TestHostRestartAndSurge: a host restarted (a crash, its Lease still live) and a rolling update with surge
// (a second host of the same node beside the old one) change neither the plugin's status nor Ready; the
// old host never writes over the new one, and leaves its Lease alone; a clean stop of the last host drops
// the node at once, and the plugin says no host serves it.
func TestHostRestartAndSurge(t *testing.T) {
	e := newStatusEnv(t)
	ctx := context.Background()
	wasm, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "examples", "shout", "shout.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "shout"}, BinaryData: map[string][]byte{"shout.wasm": wasm}}
	p := &wasmv1.WasmPlugin{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "shout"},
		Spec: wasmv1.WasmPluginSpec{Source: wasmv1.Source{ConfigMap: &wasmv1.ConfigMapSource{Name: "shout", Key: "shout.wasm"}}}}
	for _, o := range []client.Object{cm, p} {
		if err := e.c.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	ready := func() (bool, string) {
		p := e.plugin("shout")
		return readyOf(p) == "True" && p.Status.NodeSummary == "1/1", "Ready=" + readyOf(p) + " nodes " + p.Status.NodeSummary
	}
	first := e.startHost("pod-1")
	e.waitFor("Ready on node-a", ready)

	// A crash: the process ends without leaving (no Shutdown), and the same pod starts again.
	pw := e.watchPlugin("shout")
	first.stop()
	rv := e.report().ResourceVersion
	again := e.startHost("pod-1")
	e.waitFor("the restarted host serves", func() (bool, string) {
		_, ok := again.r.Loader.State(client.ObjectKeyFromObject(p))
		return ok && again.r.lease.holds(), "not yet"
	})
	time.Sleep(2 * again.r.ReportInterval) // let a write that would come, come (nothing to await: none should)
	if writes, tr := pw.counts(); writes != 0 || len(tr) != 0 {
		t.Fatalf("a restart wrote the plugin %d times, Ready went %v; want no change", writes, tr)
	}
	if got := e.report().ResourceVersion; got != rv {
		t.Fatalf("a restart that loads the same plugins rewrote the report (%s -> %s)", rv, got)
	}

	// A surge: pod-2 starts beside pod-1 for node-a, takes the Lease, and reports; pod-1 yields.
	surge := e.startHost("pod-2")
	e.waitFor("pod-2 holds the Lease and reports", func() (bool, string) {
		l, h := e.lease(), e.report()
		return l != nil && ptr.Deref(l.Spec.HolderIdentity, "") == "pod-2" && h.Status.Holder == "pod-2",
			"holder " + ptr.Deref(l.Spec.HolderIdentity, "") + ", report by " + h.Status.Holder
	})
	e.waitFor("pod-1 yields", func() (bool, string) { return !again.r.lease.holds(), "pod-1 still holds" })
	// pod-1 stops as the old pod of a rolling update does: it leaves, but holds nothing to leave.
	again.stop()
	if err := again.r.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if l := e.lease(); l == nil || ptr.Deref(l.Spec.HolderIdentity, "") != "pod-2" {
		t.Fatalf("the old host's shutdown touched the new host's Lease: %+v", l)
	}
	if h := e.report(); h.Status.Holder != "pod-2" || h.Status.PluginCount != 1 {
		t.Fatalf("the old host's shutdown touched the new host's report: %+v", h.Status)
	}
	if writes, tr := pw.counts(); writes != 0 || len(tr) != 0 {
		t.Fatalf("a surge wrote the plugin %d times, Ready went %v; want no change", writes, tr)
	}

	// The last host leaves cleanly: the node goes at once, and nothing serving is not Ready.
	surge.stop()
	if err := surge.r.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if l := e.lease(); l != nil {
		t.Fatalf("the holder's clean stop left its Lease: %+v", l.Spec)
	}
	e.waitFor("not Ready with no host", func() (bool, string) {
		c := meta.FindStatusCondition(e.plugin("shout").Status.Conditions, wasmv1.ConditionReady)
		return c != nil && c.Status == metav1.ConditionFalse && c.Reason == wasmv1.ReasonNoHosts, c.Reason + ": " + c.Message
	})
	if writes, tr := pw.counts(); writes != 1 || len(tr) != 1 {
		t.Fatalf("the last host's leaving wrote the plugin %d times, Ready went %v; want one write to False", writes, tr)
	}
}

// ctrlConfigSkipNames lets several managers of one test process name their controllers alike.
func ctrlConfigSkipNames() ctrlconfig.Controller {
	return ctrlconfig.Controller{SkipNameValidation: ptr.To(true)}
}
