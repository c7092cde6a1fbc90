package hostapi

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/net/netutil"
	"k8s.io/client-go/kubernetes"
)

// CallPath is the route of a plugin call, in the syntax of net/http.ServeMux.
const CallPath = "/v1/namespaces/{namespace}/wasmplugins/{name}/call/{function}"

// DefaultAudience is the token audience a host accepts calls with unless Options.Audiences says
// otherwise.
const DefaultAudience = "wasm-operator"

// DefaultShutdownTimeout is how long Run lets in-flight calls finish after its context is done.
const DefaultShutdownTimeout = 30 * time.Second

// Connection bounds of the server (see Options).
const (
	DefaultReadTimeout    = 30 * time.Second
	DefaultIdleTimeout    = 60 * time.Second
	DefaultMaxConnections = 1024
)

// Options configure a Server. Invoker is required, and so is Kube unless DisableAuth.
type Options struct {
	// Addr is the address Run listens on, such as ":9443". Default ":9443".
	Addr string
	// TLSConfig, when set, makes Run and Serve speak HTTPS. Without it bearer tokens travel in
	// clear text: use it whenever Addr is reachable from other machines.
	TLSConfig *tls.Config

	// Invoker runs the calls.
	Invoker Invoker

	// Kube makes the TokenReviews and SubjectAccessReviews. The host's ServiceAccount needs
	// create on tokenreviews and subjectaccessreviews (the system:auth-delegator ClusterRole).
	Kube kubernetes.Interface
	// Audiences are the token audiences calls are accepted with (TokenReview spec.audiences).
	// Default [DefaultAudience]: tokens requested for the host, which the API server itself
	// refuses, so a host that is compromised, or a caller's traffic read on the way, gives nothing
	// to replay against the API server.
	Audiences []string
	// MetricsAudiences are the token audiences /metrics is served to. Default: the API server's,
	// since Prometheus sends its own ServiceAccount token to every target.
	MetricsAudiences []string
	// DisableAuth lets every caller call every plugin. New refuses it unless Addr is a loopback
	// address (127.0.0.0/8, ::1 or localhost), and Serve unless its listener is on one.
	DisableAuth bool
	// AuthCacheTTL is how long a valid token and an allowed access are remembered. Default
	// DefaultAuthCacheTTL (10s).
	AuthCacheTTL time.Duration
	// AuthDeniedCacheTTL is how long an invalid token and a denied access are remembered.
	// Default DefaultAuthDeniedCacheTTL (2s).
	AuthDeniedCacheTTL time.Duration
	// AuthCacheSize bounds the entries of each of the two caches. Default DefaultAuthCacheSize.
	AuthCacheSize int
	// TokenReviewRate and TokenReviewBurst bound, per client address, the TokenReviews of tokens
	// not in the cache (per second, and at once); beyond them the caller gets 429. Defaults
	// DefaultTokenReviewRate (2/s) and DefaultTokenReviewBurst (20).
	TokenReviewRate  float64
	TokenReviewBurst int

	// ReadTimeout bounds reading a whole request, body included, so a client sending its body a
	// byte at a time loses its connection. Default DefaultReadTimeout (30s).
	ReadTimeout time.Duration
	// IdleTimeout closes keep-alive connections idle this long. Default DefaultIdleTimeout (60s).
	IdleTimeout time.Duration
	// MaxConnections caps the connections served at once; more wait in the listen backlog.
	// Default DefaultMaxConnections (1024).
	MaxConnections int

	// Metrics, when set, are the metrics the server counts calls in; else New makes them and
	// registers them with Registerer.
	Metrics *Metrics
	// Registerer is where New registers the metrics it makes. Default
	// prometheus.DefaultRegisterer.
	Registerer prometheus.Registerer
	// Gatherer is what /metrics serves. Default: Registerer when it is a Gatherer (as a
	// *prometheus.Registry is), else prometheus.DefaultGatherer.
	Gatherer prometheus.Gatherer

	// Ready, when set, decides /readyz: 200 when it returns nil, else 503 with its error text.
	// Without it the server is ready as soon as it serves.
	Ready func() error

	// Logger is used when a request's context carries none. Default: logr.Discard().
	Logger logr.Logger
	// ShutdownTimeout bounds how long Run waits for in-flight requests once its context is done.
	// Default DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
}

// Server is the node host's HTTP API: plugin calls on CallPath, /metrics, /healthz and /readyz.
type Server struct {
	opts    Options
	invoker Invoker
	auth    *authorizer // nil when auth is off
	metrics *Metrics
	log     logr.Logger
	handler http.Handler
}

// New checks opts and makes a Server.
func New(opts Options) (*Server, error) {
	if opts.Invoker == nil {
		return nil, errors.New("hostapi: Options.Invoker is required")
	}
	if opts.Addr == "" {
		opts.Addr = ":9443"
	}
	s := &Server{opts: opts, invoker: opts.Invoker, log: opts.Logger}
	if s.log.GetSink() == nil {
		s.log = logr.Discard()
	}
	if opts.DisableAuth {
		if !loopbackAddr(opts.Addr) {
			return nil, fmt.Errorf("hostapi: authentication can be turned off only when listening on loopback "+
				"(127.0.0.1, ::1 or localhost), and %q is not: listen on a loopback address or keep authentication on", opts.Addr)
		}
	} else {
		if opts.Kube == nil {
			return nil, errors.New("hostapi: Options.Kube is required for TokenReview and SubjectAccessReview unless DisableAuth is set")
		}
		if len(opts.Audiences) == 0 {
			opts.Audiences = []string{DefaultAudience}
		}
		size := opts.AuthCacheSize
		if size <= 0 {
			size = DefaultAuthCacheSize
		}
		s.auth = &authorizer{
			client:     opts.Kube,
			audiences:  opts.Audiences,
			metricsAud: opts.MetricsAudiences,
			allowedTTL: orDefault(opts.AuthCacheTTL, DefaultAuthCacheTTL),
			deniedTTL:  orDefault(opts.AuthDeniedCacheTTL, DefaultAuthDeniedCacheTTL),
			now:        time.Now,
			tokens:     newTTLCache[[32]byte, tokenResult](size),
			access:     newTTLCache[accessKey, accessResult](size),
			limiters: newClientLimiters(orDefaultF(opts.TokenReviewRate, DefaultTokenReviewRate),
				orDefaultN(opts.TokenReviewBurst, DefaultTokenReviewBurst), size),
		}
	}
	s.metrics = opts.Metrics
	if s.metrics == nil {
		reg := opts.Registerer
		if reg == nil {
			reg = prometheus.DefaultRegisterer
		}
		m, err := NewMetrics(reg)
		if err != nil {
			return nil, fmt.Errorf("hostapi: register metrics: %w", err)
		}
		s.metrics = m
	}
	gatherer := opts.Gatherer
	if gatherer == nil {
		if g, ok := opts.Registerer.(prometheus.Gatherer); ok {
			gatherer = g
		} else {
			gatherer = prometheus.DefaultGatherer
		}
	}

	mux := http.NewServeMux()
	mux.HandleFunc(CallPath, s.serveCall)
	mux.Handle("GET /metrics", s.guardPath(promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{})))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", s.serveReady)
	s.handler = mux
	return s, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

func orDefaultF(v, def float64) float64 {
	if v <= 0 {
		return def
	}
	return v
}

func orDefaultN(v, def int) int {
	if v <= 0 {
		return def
	}
	return v
}

// Handler returns the server's routes, for tests and for embedding in another server. It does
// not check where it is served: with DisableAuth, serve it on loopback only.
func (s *Server) Handler() http.Handler { return s.handler }

// Metrics returns the metrics the server counts calls in, for the host to set the pool gauges
// and observe loads.
func (s *Server) Metrics() *Metrics { return s.metrics }

// Run listens on Options.Addr and serves until ctx is done, then shuts down gracefully: it stops
// accepting, lets in-flight calls finish within ShutdownTimeout, and returns nil.
func (s *Server) Run(ctx context.Context) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.opts.Addr)
	if err != nil {
		return fmt.Errorf("hostapi: listen: %w", err)
	}
	return s.Serve(ctx, ln)
}

// Serve is Run on a listener the caller opened; it closes ln. With DisableAuth it refuses a
// listener that is not on a loopback address.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if s.auth == nil {
		if tcp, ok := ln.Addr().(*net.TCPAddr); !ok || !tcp.IP.IsLoopback() {
			_ = ln.Close()
			return fmt.Errorf("hostapi: authentication is off, so the server listens on loopback only, and %s is not", ln.Addr())
		}
	}
	// The cap counts TCP connections, TLS handshakes in progress included.
	ln = netutil.LimitListener(ln, orDefaultN(s.opts.MaxConnections, DefaultMaxConnections))
	if s.opts.TLSConfig != nil {
		ln = tls.NewListener(ln, s.opts.TLSConfig)
	}
	readTimeout := orDefault(s.opts.ReadTimeout, DefaultReadTimeout)
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: min(10*time.Second, readTimeout),
		ReadTimeout:       readTimeout,
		IdleTimeout:       orDefault(s.opts.IdleTimeout, DefaultIdleTimeout),
		// Requests carry ctx's values (its logger) but not its cancellation: in-flight calls
		// finish when ctx is done.
		BaseContext: func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	s.log.Info("serving the call API", "addr", ln.Addr().String(), "tls", s.opts.TLSConfig != nil, "auth", s.auth != nil)
	select {
	case err := <-errc:
		return fmt.Errorf("hostapi: serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), orDefault(s.opts.ShutdownTimeout, DefaultShutdownTimeout))
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
		return fmt.Errorf("hostapi: shut down: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("hostapi: serve: %w", err)
	}
	return nil
}

// loopbackAddr reports whether a listen address is on loopback only: its host is "localhost" or
// a loopback IP. An empty host (":9443") listens on every interface.
func loopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (s *Server) serveReady(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if s.opts.Ready != nil {
		if err := s.opts.Ready(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = fmt.Fprintf(w, "not ready: %v\n", err)
			return
		}
	}
	_, _ = w.Write([]byte("ok\n"))
}

// guardPath requires, when authentication is on, a bearer token allowed to get the request's path (RBAC
// nonResourceURLs), as the API server guards its own /metrics: plugin names and call counts are not for
// everyone on the node's network.
func (s *Server) guardPath(next http.Handler) http.Handler {
	if s.auth == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d := s.auth.checkPath(r.Context(), r.RemoteAddr, r.Header.Get("Authorization"), r.URL.Path); d != nil {
			refused(w, d)
			if d.status == http.StatusUnauthorized {
				w.Header().Set("WWW-Authenticate", `Bearer realm="wasm-operator"`)
			}
			if d.err != nil {
				s.log.Error(d.err, "review a metrics request")
			}
			http.Error(w, d.message, d.status)
			return
		}
		next.ServeHTTP(w, r)
	})
}
