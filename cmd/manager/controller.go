package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/go-logr/logr"
	certv1 "k8s.io/api/certificates/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/fields"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	wasmv1 "github.com/wasm-operator/wasm-operator/api/v1alpha1"
	"github.com/wasm-operator/wasm-operator/controllers"
	"github.com/wasm-operator/wasm-operator/internal/scheduler"
	"github.com/wasm-operator/wasm-operator/internal/source"
	"github.com/wasm-operator/wasm-operator/internal/store"
	"github.com/wasm-operator/wasm-operator/runtime"
)

func init() {
	commands["controller"] = command{summary: "run the cluster-wide WasmPlugin reconciler", run: runController}
}

// newScheme holds the built-in types and the WasmPlugin API.
func newScheme() *k8sruntime.Scheme {
	s := k8sruntime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := wasmv1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}

// operatorNamespace is the namespace the process runs in ($POD_NAMESPACE in the chart), where host Leases
// and the leader election Lease live.
func operatorNamespace() string {
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		return ns
	}
	return "wasm-operator-system"
}

// quantityFlag is a flag holding a byte size written as a Kubernetes quantity (256Mi, 10Gi).
type quantityFlag struct{ v *int64 }

func (q quantityFlag) String() string {
	if q.v == nil {
		return ""
	}
	return resource.NewQuantity(*q.v, resource.BinarySI).String()
}

func (q quantityFlag) Set(s string) error {
	v, err := resource.ParseQuantity(s)
	if err != nil {
		return fmt.Errorf("not a size such as 256Mi: %w", err)
	}
	*q.v = v.Value()
	return nil
}

func runController(args []string) int {
	fs := flag.NewFlagSet("manager controller", flag.ContinueOnError)
	var (
		cacheDir      = fs.String("cache-dir", "/var/cache/wasm-operator", "root of the shared module cache (a ReadWriteMany volume shared with the hosts)")
		namespace     = fs.String("namespace", operatorNamespace(), "namespace of the host Leases and the leader election Lease; $POD_NAMESPACE when set")
		metricsAddr   = fs.String("metrics-bind-address", ":8080", "address of the Prometheus /metrics endpoint; 0 disables it")
		metricsSecure = fs.Bool("metrics-secure", true, "serve /metrics over HTTPS (a self-signed certificate) to bearer tokens allowed to get /metrics (TokenReview, SubjectAccessReview); false serves plain HTTP to anyone")
		probeAddr     = fs.String("health-probe-bind-address", ":8081", "address of /healthz and /readyz")
		leaderElect   = fs.Bool("leader-elect", true, "elect one active controller among replicas")
		leaseDur      = fs.Duration("leader-elect-lease-duration", 60*time.Second, "how long a leader's election Lease is valid; a standby takes over this long after a leader is lost without releasing it")
		renewDeadline = fs.Duration("leader-elect-renew-deadline", 40*time.Second, "how long the leader keeps trying to renew before it gives up leading (and exits, to be restarted)")
		retryPeriod   = fs.Duration("leader-elect-retry-period", 5*time.Second, "how often the leader renews, and standbys try to acquire")
		workers       = fs.Int("concurrency", controllers.DefaultConcurrency, "WasmPlugins reconciled at once")
		gcInterval    = fs.Duration("gc-interval", 10*time.Minute, "how often unreferenced modules are collected from the cache")
		gcGrace       = fs.Duration("gc-grace", 24*time.Hour, "how long an unreferenced module stays in the cache")
		qps           = fs.Float64("kube-api-qps", controllers.DefaultKubeAPIQPS, "queries per second to the API server")
		burst         = fs.Int("kube-api-burst", controllers.DefaultKubeAPIBurst, "burst of queries to the API server")
		denyPrivate   = fs.Bool("source-deny-private-networks", false, "refuse module sources on private addresses (RFC 1918, unique-local, carrier-grade NAT...), checked at dial time and on every redirect; loopback and link-local sources are always refused")
		allowedHosts  = fs.String("allowed-source-hosts", "", "comma-separated globs of the only hosts module sources may name (and redirect to), such as registry.example.com,*.example.org; empty allows any")
		allowLoopback = fs.Bool("dev-allow-loopback-sources", false, "let module sources on loopback through, for a development stack on one machine; never in a cluster")
		hostCA        = fs.String("host-ca-file", "", "PEM CA bundle of the hosts' call API certificates, for Cluster schedules (the chart mounts its host CA ConfigMap); empty: the system's roots")
		hostServer    = fs.String("host-server-name", "", "name the hosts' certificate is for (the host Service's DNS name), checked although Cluster schedules dial each host's pod address")
		hostToken     = fs.String("host-token-file", "", "file holding a token of the hosts' audience for the controller's ServiceAccount (a projected serviceAccountToken), read at each Cluster schedule call; empty: Cluster schedules fail and say so")
		signerName    = fs.String("host-signer-name", "", "sign the hosts' serving certificates: the spec.signerName of their CertificateSigningRequests (the hosts' --tls-signer-name), such as wasm-operator.dev/<namespace>.<release>-host; empty: no signer")
		signerSA      = fs.String("host-service-account", "", "namespace/name of the hosts' ServiceAccount, the only requester whose certificate requests are signed")
		signerNames   = fs.String("host-dns-names", "", "comma-separated DNS names of the host Service, the only names a host certificate may hold")
		signerMax     = fs.Duration("host-cert-max-duration", 7*24*time.Hour, "longest lifetime of a host certificate; hosts ask for less (a day) and renew after two thirds of it")
		caSecret      = fs.String("host-ca-secret", "", "kubernetes.io/tls Secret of --namespace holding the signer's CA (tls.crt, tls.key; ca.crt, the root, for an intermediate CA)")
		caHistory     = fs.String("host-ca-history-secret", "", "Secret of --namespace where the signer keeps the CAs it signed with before, while valid, so that certificates they signed stay trusted after the CA is renewed (key ca.crt); empty keeps none")
		caGenerate    = fs.Bool("host-ca-generate", false, "make the CA and its Secret when --host-ca-secret does not exist, and a new CA 30 days before it expires (else wait for it: cert-manager issues and renews it)")
		caConfigMap   = fs.String("host-ca-configmap", "", "ConfigMap of --namespace the signer publishes the CA bundle callers trust in (key ca.crt)")
		maxModule     = source.DefaultMaxBytes
		cacheMaxBytes int64
		compile       compileFlags
	)
	compile.register(fs)
	fs.Var(quantityFlag{&maxModule}, "max-module-size", "largest module fetched, as a size such as 256Mi")
	fs.Var(quantityFlag{&cacheMaxBytes}, "cache-max-size", "cap of the module cache, such as 10Gi; least recently used unreferenced modules are evicted first; 0 means no cap")
	log, ok := parseWithLogging(fs, args)
	if !ok {
		return 2
	}
	if err := controllerMain(ctrl.SetupSignalHandler(), log, controllerOptions{
		cacheDir: *cacheDir, namespace: *namespace, metricsAddr: *metricsAddr, metricsSecure: *metricsSecure, probeAddr: *probeAddr,
		leaderElect: *leaderElect, leaseDuration: *leaseDur, renewDeadline: *renewDeadline, retryPeriod: *retryPeriod, workers: *workers, gcInterval: *gcInterval, gcGrace: *gcGrace,
		qps: float32(*qps), burst: *burst, maxModule: maxModule, cacheMax: cacheMaxBytes, compile: compile,
		guard:    source.Guard{DenyPrivateNetworks: *denyPrivate, AllowedHosts: splitList(*allowedHosts), AllowLoopback: *allowLoopback},
		hostCall: controllers.HostCallOptions{CAFile: *hostCA, ServerName: *hostServer, TokenFile: *hostToken},
		signer: controllers.HostSignerOptions{SignerName: *signerName, Requester: *signerSA, DNSNames: splitList(*signerNames),
			MaxDuration: *signerMax, CASecret: *caSecret, CAHistorySecret: *caHistory, GenerateCA: *caGenerate, CABundleConfigMap: *caConfigMap},
	}); err != nil {
		log.Error(err, "controller stopped")
		return 1
	}
	return 0
}

type controllerOptions struct {
	cacheDir, namespace, metricsAddr, probeAddr string
	leaderElect, metricsSecure                  bool
	workers                                     int
	gcInterval, gcGrace                         time.Duration
	leaseDuration, renewDeadline, retryPeriod   time.Duration
	compile                                     compileFlags
	qps                                         float32
	burst                                       int
	maxModule, cacheMax                         int64
	guard                                       source.Guard
	hostCall                                    controllers.HostCallOptions
	signer                                      controllers.HostSignerOptions
}

// splitList splits a comma-separated flag value, dropping spaces and empty items.
func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

func controllerMain(ctx context.Context, log logr.Logger, o controllerOptions) error {
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("find the API server (set KUBECONFIG or run in a cluster): %w", err)
	}
	cfg.QPS, cfg.Burst = o.qps, o.burst
	metricsOpts := metricsserver.Options{BindAddress: o.metricsAddr}
	if o.metricsSecure {
		// As the API server guards its own /metrics: reconcile counts and fetch failures name every
		// plugin and source.
		metricsOpts.SecureServing = true
		metricsOpts.FilterProvider = filters.WithAuthenticationAndAuthorization
	}
	var cacheOpts cache.Options
	if o.signer.SignerName != "" {
		// Only the requests of this signer: a cluster's kubelets renew theirs all the time.
		cacheOpts.ByObject = map[client.Object]cache.ByObject{&certv1.CertificateSigningRequest{}: {
			Field: fields.OneTermEqualSelector("spec.signerName", o.signer.SignerName)}}
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                        newScheme(),
		Cache:                         cacheOpts,
		Metrics:                       metricsOpts,
		HealthProbeBindAddress:        o.probeAddr,
		LeaderElection:                o.leaderElect,
		LeaderElectionID:              "wasm-operator-controller",
		LeaderElectionNamespace:       o.namespace,
		LeaderElectionReleaseOnCancel: true,
		// Longer than controller-runtime's 15 s/10 s/2 s: an API server busy with a rollout on a thousand
		// nodes answered a renewal late and the leader gave up; a clean stop releases the Lease anyway.
		LeaseDuration: &o.leaseDuration, RenewDeadline: &o.renewDeadline, RetryPeriod: &o.retryPeriod,
	})
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}
	st, eng, err := openCache(ctx, o.cacheDir, o.cacheDir, store.Options{Registerer: metrics.Registry, MaxBytes: o.maxModule}, o.compile)
	if err != nil {
		return err
	}
	defer eng.Close(context.Background())
	logSandbox(log)
	fm, err := source.NewMetrics(metrics.Registry)
	if err != nil {
		return fmt.Errorf("register fetch metrics: %w", err)
	}
	r := &controllers.WasmPluginReconciler{
		Client:                  mgr.GetClient(),
		APIReader:               mgr.GetAPIReader(),
		Recorder:                mgr.GetEventRecorder("wasm-operator-controller"),
		Fetcher:                 &source.Fetcher{Metrics: fm, Guard: &o.guard},
		Store:                   st,
		Engine:                  eng,
		HostNamespace:           o.namespace,
		MaxModuleBytes:          o.maxModule,
		MaxConcurrentReconciles: o.workers,
	}
	o.signer.Namespace = o.namespace
	keeper, err := controllers.SetupHostSigner(mgr, o.signer)
	if err != nil {
		return err
	}
	if keeper != nil {
		// The controller trusts the bundle it publishes itself when it calls hosts.
		o.hostCall.Roots = keeper.Pool
		if o.hostCall.ServerName == "" {
			o.hostCall.ServerName = o.signer.DNSNames[0]
		}
	}
	if r.Schedules, err = controllers.NewClusterSchedules(r, o.hostCall, scheduler.Options{Registerer: metrics.Registry}); err != nil {
		return err
	}
	if err := r.SetupWithManager(mgr); err != nil {
		return err
	}
	if err := mgr.Add(&controllers.StoreGC{Reconciler: r, Interval: o.gcInterval, Grace: o.gcGrace, MaxBytes: o.cacheMax}); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	log.Info("starting controller", "cacheDir", o.cacheDir, "namespace", o.namespace, "leaderElect", o.leaderElect)
	return mgr.Start(ctx)
}

// openCache opens the module store of the shared cache folder dir and a wasm engine. The controller
// (compileDir == dir) compiles into the shared cache; a host opens the store read-only and compiles into
// its node-local compileDir, reading what the controller compiled from dir (empty: in memory only).
func openCache(ctx context.Context, dir, compileDir string, opts store.Options, compile compileFlags) (*store.Store, *runtime.Engine, error) {
	st, err := store.Open(dir, opts)
	if err != nil {
		return nil, nil, fmt.Errorf("open the module cache: %w", err)
	}
	cfg, err := compile.engineConfig(compileDir)
	if err != nil {
		return nil, nil, err
	}
	if compileDir != dir && compileDir != "" {
		cfg.SharedCacheDir = dir
	}
	eng, err := runtime.NewEngine(ctx, cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("start the wasm engine: %w", err)
	}
	return st, eng, nil
}

// parseWithLogging adds the logging flags (--zap-log-level and friends) to fs, parses args and sets up the
// logger every subcommand logs with. ok is false when the arguments are wrong (fs has said why).
func parseWithLogging(fs *flag.FlagSet, args []string) (log logr.Logger, ok bool) {
	zopts := zap.Options{}
	zopts.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		return logr.Discard(), false
	}
	log = zap.New(zap.UseFlagOptions(&zopts))
	ctrl.SetLogger(log)
	return log, true
}
