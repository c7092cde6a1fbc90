package hostapi

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wasm-operator/wasm-operator/internal/testenv"
)

// The test control plane, started by the first test that needs it and stopped by TestMain.
var (
	envOnce sync.Once
	env     *envtest.Environment
	envCfg  *rest.Config
	envErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if env != nil {
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stop the test control plane:", err)
		}
	}
	os.Exit(code)
}

func controlPlane(t *testing.T) *rest.Config {
	t.Helper()
	envOnce.Do(func() { env, envCfg, envErr = testenv.Start() })
	if envErr != nil {
		t.Fatal(envErr)
	}
	return rest.CopyConfig(envCfg)
}

// reviewCounter counts the TokenReviews and SubjectAccessReviews sent through it.
type reviewCounter struct {
	next         http.RoundTripper
	tokens, sars atomic.Int64
}

func (c *reviewCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	switch {
	case strings.HasSuffix(r.URL.Path, "/tokenreviews"):
		c.tokens.Add(1)
	case strings.HasSuffix(r.URL.Path, "/subjectaccessreviews"):
		c.sars.Add(1)
	}
	return c.next.RoundTrip(r)
}

// serviceAccountToken creates a ServiceAccount and returns a token of it from the TokenRequest API,
// for audiences (none: the API server's).
func serviceAccountToken(t *testing.T, cs kubernetes.Interface, ns, name string, audiences ...string) string {
	t.Helper()
	ctx := context.Background()
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return tokenFor(t, cs, ns, name, audiences...)
}

// tokenFor returns a token of an existing ServiceAccount for audiences (none: the API server's).
func tokenFor(t *testing.T, cs kubernetes.Interface, ns, name string, audiences ...string) string {
	t.Helper()
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(context.Background(), name,
		&authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{Audiences: audiences}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

func TestAuthAgainstAPIServer(t *testing.T) {
	cfg := controlPlane(t)
	admin := kubernetes.NewForConfigOrDie(cfg)
	ctx := context.Background()
	const ns = "calls"
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Callers request tokens for the host's audience, as a projected serviceAccountToken volume does.
	allowed := serviceAccountToken(t, admin, ns, "caller", DefaultAudience)
	denied := serviceAccountToken(t, admin, ns, "stranger", DefaultAudience)
	// The same caller's tokens for the API server and for another service: what a host must refuse.
	apiServerToken := tokenFor(t, admin, ns, "caller")
	otherAudience := tokenFor(t, admin, ns, "caller", "vault")
	if _, err := admin.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "call-plugins"},
		Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{"wasm-operator.dev"}, Resources: []string{"wasmplugins/call"}, Verbs: []string{"create"},
		}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "caller-calls-plugins"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "call-plugins"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "caller", Namespace: ns}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	counter := &reviewCounter{}
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { counter.next = rt; return counter })
	inv := &fakeInvoker{limits: map[string]int64{ns + "/echo": 0, "other/echo": 0}}
	s, _ := newTestServer(t, inv, func(o *Options) {
		o.DisableAuth = false
		o.Kube = kubernetes.NewForConfigOrDie(cfg)
		o.AuthCacheTTL = time.Hour // the cache test below must not depend on timing
		o.AuthDeniedCacheTTL = time.Hour
	})
	url := newHTTPServer(t, s)

	call := func(path, auth string) (int, http.Header, string) {
		t.Helper()
		req, _ := http.NewRequest("POST", url+path, strings.NewReader("hi"))
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(b)
	}
	echo := "/v1/namespaces/" + ns + "/wasmplugins/echo/call/run"

	tests := []struct {
		name       string
		path, auth string
		status     int
		body       string
		wwwAuth    string
		outcome    string
	}{
		{name: "bound service account", path: echo, auth: "Bearer " + allowed, status: 200, body: "hi", outcome: OutcomeOK},
		{name: "scheme is case-insensitive", path: echo, auth: "bearer " + allowed, status: 200, body: "hi", outcome: OutcomeOK},
		{name: "service account without the binding", path: echo, auth: "Bearer " + denied, status: 403,
			body:    `forbidden: "system:serviceaccount:calls:stranger" needs permission to create wasmplugins/call (API group wasm-operator.dev) in namespace "calls"`,
			outcome: OutcomeForbidden},
		{name: "binding is per namespace", path: "/v1/namespaces/other/wasmplugins/echo/call/run", auth: "Bearer " + allowed, status: 403,
			body: `in namespace "other"`, outcome: OutcomeForbidden},
		{name: "no token", path: echo, status: 401, body: "bearer token is required",
			wwwAuth: `Bearer realm="wasm-operator"`, outcome: OutcomeUnauthorized},
		{name: "not a bearer token", path: echo, auth: "Basic dXNlcjpwdw==", status: 401, body: "bearer token is required",
			wwwAuth: `Bearer realm="wasm-operator", error="invalid_token"`, outcome: OutcomeUnauthorized},
		{name: "garbage token", path: echo, auth: "Bearer not-a-token", status: 401, body: "not a JWT",
			wwwAuth: `Bearer realm="wasm-operator", error="invalid_token"`, outcome: OutcomeUnauthorized},
		{name: "forged token", path: echo, auth: "Bearer " + jwtLike("forged"), status: 401, body: "not valid",
			wwwAuth: `Bearer realm="wasm-operator", error="invalid_token"`, outcome: OutcomeUnauthorized},
		{name: "token for the API server", path: echo, auth: "Bearer " + apiServerToken, status: 401,
			body: "not valid for audience wasm-operator", wwwAuth: `Bearer realm="wasm-operator", error="invalid_token"`, outcome: OutcomeUnauthorized},
		{name: "token of another audience", path: echo, auth: "Bearer " + otherAudience, status: 401,
			body: "not valid for audience wasm-operator", wwwAuth: `Bearer realm="wasm-operator", error="invalid_token"`, outcome: OutcomeUnauthorized},
		{name: "unserved plugin is 404 only once authorized", path: "/v1/namespaces/" + ns + "/wasmplugins/absent/call/run",
			auth: "Bearer " + allowed, status: 404, body: "not served on this node", outcome: OutcomeNotFound},
		{name: "unserved plugin without token is 401", path: "/v1/namespaces/" + ns + "/wasmplugins/absent/call/run",
			status: 401, wwwAuth: `Bearer realm="wasm-operator"`, outcome: OutcomeUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, h, body := call(tt.path, tt.auth)
			if code != tt.status {
				t.Fatalf("status = %d, want %d; body %q", code, tt.status, body)
			}
			if !strings.Contains(body, tt.body) {
				t.Errorf("body = %q, want it to contain %q", body, tt.body)
			}
			if got := h.Get("WWW-Authenticate"); got != tt.wwwAuth {
				t.Errorf("WWW-Authenticate = %q, want %q", got, tt.wwwAuth)
			}
			if strings.Contains(body, allowed) || strings.Contains(body, denied) || strings.Contains(body, apiServerToken) {
				t.Error("the answer holds a token")
			}
		})
	}
	m := s.Metrics().Calls
	for _, c := range []struct {
		ns, name, fn, outcome string
		want                  float64
	}{
		{ns, "echo", "run", OutcomeOK, 2},
		{ns, "echo", "", OutcomeForbidden, 1},
		{"other", "echo", "", OutcomeForbidden, 1},
		{ns, "echo", "", OutcomeUnauthorized, 6},
		{"", "", "", OutcomeUnauthorized, 1},
		{"", "", "", OutcomeNotFound, 1},
	} {
		if got := testutil.ToFloat64(m.WithLabelValues(c.ns, c.name, c.fn, c.outcome)); got != c.want {
			t.Errorf("calls_total{%s/%s %q %s} = %v, want %v", c.ns, c.name, c.fn, c.outcome, got, c.want)
		}
	}

	// Repeated calls are answered from the cache: no new review.
	tokens, sars := counter.tokens.Load(), counter.sars.Load()
	for range 20 {
		if code, _, _ := call(echo, "Bearer "+allowed); code != 200 {
			t.Fatalf("cached allowed call = %d", code)
		}
		if code, _, _ := call(echo, "Bearer "+denied); code != 403 {
			t.Fatalf("cached denied call = %d", code)
		}
		if code, _, _ := call(echo, "Bearer "+jwtLike("forged")); code != 401 {
			t.Fatalf("cached invalid call = %d", code)
		}
		if code, _, _ := call(echo, "Bearer not-a-token"); code != 401 {
			t.Fatalf("malformed token call = %d", code)
		}
	}
	if dt, ds := counter.tokens.Load()-tokens, counter.sars.Load()-sars; dt != 0 || ds != 0 {
		t.Errorf("80 repeated calls made %d token reviews and %d access reviews, want 0 and 0", dt, ds)
	}
	// Five distinct well-formed tokens were reviewed once each (the malformed one never), and four
	// (token, plugin) pairs authorized once each.
	if tokens != 5 || sars != 4 {
		t.Errorf("first calls made %d token reviews and %d access reviews, want 5 and 4", tokens, sars)
	}
}

// TestMetricsNeedPermission: with authentication on, /metrics answers only a token allowed to get it
// (nonResourceURLs), as the API server's own /metrics does; /healthz and /readyz stay open for probes.
func TestMetricsNeedPermission(t *testing.T) {
	cfg := controlPlane(t)
	admin := kubernetes.NewForConfigOrDie(cfg)
	ctx := context.Background()
	const ns = "scrapers"
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	prometheus := serviceAccountToken(t, admin, ns, "prometheus")
	other := serviceAccountToken(t, admin, ns, "other")
	if _, err := admin.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "test-metrics-reader"},
		Rules:      []rbacv1.PolicyRule{{NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "test-prometheus-reads-metrics"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "test-metrics-reader"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "prometheus", Namespace: ns}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	s, _ := newTestServer(t, &fakeInvoker{}, func(o *Options) {
		o.DisableAuth = false
		o.Kube = admin
	})
	url := newHTTPServer(t, s)
	get := func(path, token string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", url+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, c := range []struct {
		name, path, token string
		status            int
		body              string
	}{
		{"metrics reader", "/metrics", prometheus, 200, ""},
		{"token without the permission", "/metrics", other, 403, "needs permission to get /metrics"},
		{"no token", "/metrics", "", 401, "bearer token is required"},
		{"liveness stays open", "/healthz", "", 200, "ok"},
		{"readiness stays open", "/readyz", "", 200, ""},
	} {
		if code, body := get(c.path, c.token); code != c.status || !strings.Contains(body, c.body) {
			t.Errorf("%s: GET %s = %d %.120q, want %d with %q", c.name, c.path, code, body, c.status, c.body)
		}
	}
}
