package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	wasmv1 "github.com/wasm-operator/wasm-operator/api/v1alpha1"
	"github.com/wasm-operator/wasm-operator/controllers/host"
	"github.com/wasm-operator/wasm-operator/internal/crashguard"
	"github.com/wasm-operator/wasm-operator/internal/hostapi"
	"github.com/wasm-operator/wasm-operator/internal/hostcerts"
	"github.com/wasm-operator/wasm-operator/internal/scheduler"
	"github.com/wasm-operator/wasm-operator/internal/store"
)

func init() {
	commands["host"] = command{summary: "run the node-local host that serves plugin calls", run: runHost}
}

type hostOptions struct {
	node, cacheDir, namespace, listen string
	compileDir                        string
	audiences, tlsCert, tlsKey        string
	tlsSigner, tlsDNSNames            string
	tlsDuration                       time.Duration
	auth                              bool
	maxConnections                    int
	leaseDuration, reportInterval     time.Duration
	maxInitTimeout                    time.Duration
	identity, advertise               string
	compile                           compileFlags
	stateDir                          string
	redis                             redisFlags
	drainDelay                        time.Duration
}

func runHost(args []string) int {
	fs := flag.NewFlagSet("manager host", flag.ContinueOnError)
	var o hostOptions
	fs.StringVar(&o.node, "node-name", os.Getenv("NODE_NAME"), "name of the node this host runs on; $NODE_NAME (from the downward API) when set")
	fs.StringVar(&o.cacheDir, "cache-dir", "/var/cache/wasm-operator", "root of the shared module cache the controller fills; the host only reads it (mount it read-only)")
	fs.StringVar(&o.compileDir, "compile-cache-dir", "", "node-local folder for the code this host compiles itself (the shared cache lacks it: other CPU features, a new wazero); never the shared cache. Empty: compile in memory only")
	fs.StringVar(&o.namespace, "namespace", operatorNamespace(), "namespace of the host Leases; $POD_NAMESPACE when set")
	fs.StringVar(&o.listen, "listen", ":8181", "address of the call API, /metrics, /healthz and /readyz")
	fs.BoolVar(&o.auth, "auth", true, "authenticate callers (TokenReview) and authorize them (SubjectAccessReview for create on wasmplugins/call); false is allowed only on a loopback --listen address")
	fs.StringVar(&o.audiences, "token-audiences", hostapi.DefaultAudience, "comma-separated audiences a caller's token must be issued for (TokenReview spec.audiences); callers mount a projected serviceAccountToken of this audience, which the API server itself refuses")
	fs.StringVar(&o.tlsCert, "tls-cert-file", "", "PEM serving certificate of the call API (HTTPS); read again when it changes. Required with --auth, so that tokens never cross the network in clear")
	fs.StringVar(&o.tlsKey, "tls-key-file", "", "PEM private key of --tls-cert-file")
	fs.StringVar(&o.tlsSigner, "tls-signer-name", "", "instead of --tls-cert-file: ask this signer (the controller's, through a CertificateSigningRequest) for a serving certificate of this host alone, with a key that never leaves the process, renewed after two thirds of its life")
	fs.StringVar(&o.tlsDNSNames, "tls-dns-names", "", "comma-separated names of the certificate asked with --tls-signer-name: the host Service's DNS names, which callers check")
	fs.DurationVar(&o.tlsDuration, "tls-cert-duration", hostcerts.DefaultDuration, "lifetime asked for the certificate of --tls-signer-name (the signer may cut it; 10m at least)")
	fs.IntVar(&o.maxConnections, "max-connections", hostapi.DefaultMaxConnections, "connections the call API serves at once; more wait")
	fs.DurationVar(&o.leaseDuration, "lease-duration", host.DefaultLeaseDuration, "how long the host counts as live without renewing its Lease")
	fs.DurationVar(&o.maxInitTimeout, "max-init-timeout", host.DefaultMaxInitTimeout, "longest a plugin's instance may take to start (its start section and initialisers), whatever its limits.callTimeout; 0: no cap")
	fs.DurationVar(&o.reportInterval, "report-interval", host.DefaultReportInterval, "least time between two writes of this node's WasmHost report; the changes within it make one write")
	fs.StringVar(&o.identity, "identity", defaultIdentity(), "name of this host process in the node's Lease and WasmHost; $POD_NAME when set, else the machine's host name. Two hosts of one node (a surge pod) need different ones")
	fs.StringVar(&o.advertise, "advertise-url", "", "base URL of this host's call API published in its WasmHost, for the controller's Cluster schedules; default https://$POD_IP:<--listen port> when $POD_IP is set")
	fs.StringVar(&o.stateDir, "state-dir", "/var/lib/wasm-operator/host", "node-local folder where the host records the plugin version it is loading, so that after a crash it refuses that version; empty disables it")
	o.compile.register(fs)
	o.redis.register(fs)
	fs.DurationVar(&o.drainDelay, "drain-delay", 0, "at SIGTERM, keep serving calls this long with /readyz failing before stopping, so that the Service's endpoints move callers to another host first (the chart sets it)")
	log, ok := parseWithLogging(fs, args)
	if !ok {
		return 2
	}
	if o.node == "" {
		fmt.Fprintln(os.Stderr, "manager host: --node-name (or $NODE_NAME) is required: the name of the node this host runs on")
		return 2
	}
	if (o.tlsCert == "") != (o.tlsKey == "") {
		fmt.Fprintln(os.Stderr, "manager host: --tls-cert-file and --tls-key-file go together; set both")
		return 2
	}
	if o.tlsSigner != "" && o.tlsCert != "" {
		fmt.Fprintln(os.Stderr, "manager host: --tls-signer-name and --tls-cert-file are two sources of the serving certificate; set one")
		return 2
	}
	if o.tlsSigner != "" && len(splitList(o.tlsDNSNames)) == 0 {
		fmt.Fprintln(os.Stderr, "manager host: --tls-signer-name needs --tls-dns-names: the host Service's DNS names, which callers check")
		return 2
	}
	if o.tlsSigner != "" && (o.tlsDuration < hostcerts.MinDuration || o.tlsDuration > hostcerts.MaxDuration) {
		fmt.Fprintf(os.Stderr, "manager host: --tls-cert-duration %s: want between %s and %s (the API server refuses shorter requests)\n",
			o.tlsDuration, hostcerts.MinDuration, hostcerts.MaxDuration)
		return 2
	}
	if o.auth && o.tlsCert == "" && o.tlsSigner == "" {
		fmt.Fprintln(os.Stderr, "manager host: --auth needs a serving certificate (--tls-signer-name, or --tls-cert-file and --tls-key-file): bearer tokens must not cross the network in clear "+
			"(plain HTTP is only for --auth=false on a loopback --listen address)")
		return 2
	}
	if err := hostMain(ctrl.SetupSignalHandler(), log, o); err != nil {
		log.Error(err, "host stopped")
		return 1
	}
	return 0
}

func hostMain(ctx context.Context, log logr.Logger, o hostOptions) error {
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("find the API server (set KUBECONFIG or run in a cluster): %w", err)
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 newScheme(),
		Metrics:                metricsserver.Options{BindAddress: "0"}, // served with the call API
		HealthProbeBindAddress: "0",
		Cache: cache.Options{ByObject: map[client.Object]cache.ByObject{
			&corev1.Node{}: {Field: fields.OneTermEqualSelector("metadata.name", o.node)},
		}},
		Client: client.Options{Cache: &client.CacheOptions{DisableFor: []client.Object{&coordinationv1.Lease{}}}},
	})
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}
	drain := &drainer{delay: o.drainDelay}
	if o.compileDir != "" && filepath.Clean(o.compileDir) == filepath.Clean(o.cacheDir) {
		return fmt.Errorf("--compile-cache-dir must not be the shared --cache-dir: hosts never write the shared cache")
	}
	// Read-only: only the controller writes the shared cache, whose compiled code every host runs.
	st, eng, err := openCache(ctx, o.cacheDir, o.compileDir, store.Options{ReadOnly: true}, o.compile)
	if err != nil {
		return err
	}
	defer eng.Close(context.Background())
	logSandbox(log)
	hm, err := hostapi.NewMetrics(metrics.Registry)
	if err != nil {
		return fmt.Errorf("register host metrics: %w", err)
	}
	redis, err := o.redis.open()
	if err != nil {
		return err
	}
	if redis != nil {
		defer redis.Close()
	}
	plugins := &host.Plugins{Engine: eng, Store: st, Metrics: hm, Log: log.WithName("plugins"), KVRedis: redis,
		MaxInitTimeout: o.maxInitTimeout}
	if o.stateDir != "" {
		if plugins.Guard, err = crashguard.Open(o.stateDir); err != nil {
			return fmt.Errorf("%w (set --state-dir to a writable node-local folder)", err)
		}
	}
	r := &host.Reconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Node: o.node,
		Identity: o.identity, Endpoint: advertiseURL(o), Namespace: o.namespace, Loader: plugins,
		LeaseDuration: o.leaseDuration, ReportInterval: o.reportInterval}
	// Node schedules run here, on every host that serves the plugin; their results are this host's
	// metrics (wasm_operator_schedule_*{scope="Node"}) and log lines, and the failing ones are in the
	// node's WasmHost report, which the controller sums up in the plugin's status.schedules.
	if r.Schedules, err = scheduler.New(scheduler.Options{Scope: wasmv1.ScheduleScopeNode, Fire: scheduler.NodeFirer(o.node, plugins),
		Registerer: metrics.Registry, Record: r.ScheduleRecorded, OnFailure: func(j scheduler.Job, res scheduler.Result) {
			log.Info("node schedule failed", "plugin", j.Plugin, "schedule", j.Schedule, "returnCode", res.ReturnCode, "message", res.Message)
		}}); err != nil {
		return err
	}
	if err := r.SetupWithManager(mgr); err != nil {
		return err
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	var tlsConfig *tls.Config
	ready := r.Ready
	var requester *hostcerts.Requester
	switch {
	case o.tlsCert != "":
		certs, err := hostapi.NewCertReloader(o.tlsCert, o.tlsKey)
		if err != nil {
			return err
		}
		tlsConfig = certs.TLSConfig()
	case o.tlsSigner != "":
		// Not ready until the signer signed: callers would meet a certificate they do not trust.
		requester = &hostcerts.Requester{Client: kube, SignerName: o.tlsSigner, Node: o.node, DNSNames: splitList(o.tlsDNSNames),
			Duration: o.tlsDuration, Log: log.WithName("certificate")}
		tlsConfig = requester.TLSConfig()
		ready = func() error {
			if err := requester.Ready(); err != nil {
				return err
			}
			return r.Ready()
		}
	}
	srv, err := hostapi.New(hostapi.Options{
		TLSConfig: tlsConfig,
		Addr:      o.listen, Invoker: plugins, Kube: kube, DisableAuth: !o.auth,
		Audiences: splitList(o.audiences), MaxConnections: o.maxConnections,
		Metrics: hm, Registerer: metrics.Registry, Gatherer: metrics.Registry,
		Ready: drain.ready(ready), Logger: log.WithName("api"),
	})
	if err != nil {
		return err
	}
	log.Info("starting host", "node", o.node, "cacheDir", o.cacheDir, "listen", o.listen, "auth", o.auth, "kvRedis", o.redis.address, "drainDelay", o.drainDelay)
	// The call API and the manager live and die together: a host that cannot serve calls must not keep
	// its Lease and report Ready entries. Both run on past the signal for the drain delay.
	ctx, cancel := drain.after(ctx, func() { log.Info("stopping: draining calls, /readyz fails", "for", o.drainDelay) })
	defer cancel()
	errs := make(chan error, 2)
	if requester != nil {
		go func() { _ = requester.Start(ctx) }()
	}
	go func() { errs <- srv.Run(ctx) }()
	go func() { errs <- mgr.Start(ctx) }()
	err = <-errs
	cancel()
	if err2 := <-errs; err == nil {
		err = err2
	}
	// Both stopped: no reconcile runs any more. Leave the cluster cleanly.
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if serr := r.Shutdown(sctx); serr != nil {
		log.Error(serr, "leave cleanly; the controller drops this node when its Lease expires")
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	log.Info("host stopped", "node", o.node)
	return nil
}

// defaultIdentity is the pod's name, which the chart passes as $POD_NAME, else the machine's host name.
func defaultIdentity() string {
	if n := os.Getenv("POD_NAME"); n != "" {
		return n
	}
	h, _ := os.Hostname()
	return h
}

// advertiseURL is --advertise-url, or the call API on the pod's IP.
func advertiseURL(o hostOptions) string {
	if o.advertise != "" {
		return o.advertise
	}
	ip := os.Getenv("POD_IP")
	if ip == "" {
		return ""
	}
	_, port, err := net.SplitHostPort(o.listen)
	if err != nil {
		return ""
	}
	scheme := "https"
	if o.tlsCert == "" && o.tlsSigner == "" {
		scheme = "http"
	}
	return scheme + "://" + net.JoinHostPort(ip, port)
}

// drainer delays a host's stop after SIGTERM: for delay, /readyz fails, so that the kubelet takes the pod
// out of the Service's endpoints and kube-proxy sends new connections to another host (a surge pod on the
// same node), while the calls that still arrive are served. Without it, calls routed by rules that
// kube-proxy has not yet updated meet a closed port.
type drainer struct {
	delay    time.Duration
	draining atomic.Bool
}

// ready wraps a readiness check: not ready once draining.
func (d *drainer) ready(check func() error) func() error {
	return func() error {
		if d.draining.Load() {
			return errors.New("shutting down")
		}
		return check()
	}
}

// after returns a context that is done delay after parent is done (at once without a delay), calling
// onDrain when parent is done.
func (d *drainer) after(parent context.Context, onDrain func()) (context.Context, context.CancelFunc) {
	if d.delay <= 0 {
		return context.WithCancel(parent)
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(parent))
	go func() {
		select {
		case <-parent.Done():
		case <-ctx.Done():
			return
		}
		d.draining.Store(true)
		onDrain()
		t := time.NewTimer(d.delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		cancel()
	}()
	return ctx, cancel
}
