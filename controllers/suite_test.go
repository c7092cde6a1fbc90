package controllers

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	wasmv1 "github.com/wasm-operator/wasm-operator/api/v1alpha1"
	"github.com/wasm-operator/wasm-operator/internal/source"
	"github.com/wasm-operator/wasm-operator/internal/store"
	"github.com/wasm-operator/wasm-operator/internal/testenv"
	"github.com/wasm-operator/wasm-operator/runtime"
)

const hostNS = "wasm-system"

// Shared by the tests of this package: one control plane, one manager running the reconciler.
var (
	k8s        client.Client
	reconciler *WasmPluginReconciler
	cacheDir   string
	testMaxMod int64 = 4 << 20
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	env, cfg, err := testenv.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = env.Stop() }()
	ctrl.SetLogger(zap.New(zap.UseDevMode(true), zap.Level(zapLevel())))

	scheme := k8sruntime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = wasmv1.AddToScheme(scheme)
	// The manager talks to the API server as `manager controller` does, with its client limits, and through
	// a counter of writes for BenchmarkReconcile.
	mcfg := rest.CopyConfig(cfg)
	mcfg.QPS, mcfg.Burst = DefaultKubeAPIQPS, DefaultKubeAPIBurst
	mcfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { return &writeCounter{next: rt} }
	mgr, err := ctrl.NewManager(mcfg, ctrl.Options{Scheme: scheme, Metrics: metricsserver.Options{BindAddress: "0"}})
	if err != nil {
		panic(err)
	}
	if cacheDir, err = os.MkdirTemp("", "wasm-cache-"); err != nil {
		panic(err)
	}
	defer os.RemoveAll(cacheDir)
	st, err := store.Open(cacheDir, store.Options{})
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	eng, err := runtime.NewEngine(ctx, runtime.EngineConfig{CacheDir: cacheDir})
	if err != nil {
		panic(err)
	}
	reconciler = &WasmPluginReconciler{
		Client:         mgr.GetClient(),
		APIReader:      mgr.GetAPIReader(),
		Recorder:       mgr.GetEventRecorder("wasm-operator-controller"),
		Fetcher:        &source.Fetcher{},
		Store:          st,
		Engine:         eng,
		HostNamespace:  hostNS,
		MaxModuleBytes: testMaxMod,

		MaxConcurrentReconciles: DefaultConcurrency,
	}
	if err := reconciler.SetupWithManager(mgr); err != nil {
		panic(err)
	}
	// Tests read and write through the API server, not the manager's cache, so they see their own writes.
	if k8s, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
		panic(err)
	}
	if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: hostNS}}); err != nil {
		panic(err)
	}
	done := make(chan error)
	go func() { done <- mgr.Start(ctx) }()
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		panic("cache did not sync")
	}
	code := m.Run()
	cancel()
	if err := <-done; err != nil {
		fmt.Fprintln(os.Stderr, "manager:", err)
	}
	_ = eng.Close(context.Background())
	return code
}

// zapLevel keeps the controller's logs out of test output unless TEST_VERBOSE is set.
func zapLevel() zapcore.Level {
	if os.Getenv("TEST_VERBOSE") != "" {
		return zapcore.Level(-2)
	}
	return zapcore.DPanicLevel
}

// apiWrites counts the manager's writes to the API server.
var apiWrites atomic.Int64

type writeCounter struct{ next http.RoundTripper }

func (w *writeCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	switch r.Method {
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		apiWrites.Add(1)
	}
	return w.next.RoundTrip(r)
}

// eventually polls cond until it holds or the timeout passes, then fails with the last message.
func eventually(t *testing.T, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var msg string
	for {
		var ok bool
		if ok, msg = cond(); ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not true after %s: %s", timeout, msg)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
