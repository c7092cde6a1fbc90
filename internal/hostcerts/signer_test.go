package hostcerts

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	certv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/wasm-operator/wasm-operator/internal/certs"
	"github.com/wasm-operator/wasm-operator/internal/testenv"
)

const ns = "wasm-system"

var (
	adminCfg *rest.Config
	admin    client.Client
	keeper   *CAKeeper
	policy   = Policy{SignerName: "wasm-operator.dev/wasm-system.test-host", Requester: "system:serviceaccount:wasm-system:test-host",
		DNSNames: []string{"test-host.wasm-system.svc", "test-host.wasm-system"}, MaxDuration: 24 * time.Hour}
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	env, cfg, err := testenv.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = env.Stop() }()
	adminCfg = cfg
	scheme := k8sruntime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	if admin, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := admin.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// What the chart's host role grants: requests, and reading them back.
	requesters := []client.Object{
		&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "requesters"}, Rules: []rbacv1.PolicyRule{{APIGroups: []string{"certificates.k8s.io"},
			Resources: []string{"certificatesigningrequests"}, Verbs: []string{"create", "get", "list", "watch"}}}},
		&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "requesters"},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "requesters"},
			Subjects: []rbacv1.Subject{{Kind: "Group", APIGroup: "rbac.authorization.k8s.io", Name: "system:serviceaccounts"}}},
	}
	for _, o := range requesters {
		if err := admin.Create(context.Background(), o); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	ctrl.SetLogger(logr.Discard())
	// The signer as `manager controller --host-signer-name` runs it.
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{Scheme: scheme, Metrics: metricsserver.Options{BindAddress: "0"},
		Cache: cache.Options{ByObject: map[client.Object]cache.ByObject{&certv1.CertificateSigningRequest{}: {
			Field: fields.OneTermEqualSelector("spec.signerName", policy.SignerName)}}}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	keeper = &CAKeeper{Reader: mgr.GetAPIReader(), Writer: mgr.GetClient(), Namespace: ns, SecretName: "test-host-ca-key",
		HistorySecretName: "test-host-ca-history", ConfigMapName: "test-host-ca", Generate: true, Interval: time.Second}
	if err := (&Signer{Client: mgr.GetClient(), Policy: policy, CA: keeper}).SetupWithManager(mgr); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = mgr.Start(ctx) }()
	return m.Run()
}

// as is a clientset acting as user with the node claim of a pod-bound token (none when node is empty).
func as(t *testing.T, user, node string) kubernetes.Interface {
	t.Helper()
	cfg := rest.CopyConfig(adminCfg)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: []string{"system:serviceaccounts", "system:authenticated"}}
	if node != "" {
		cfg.Impersonate.Extra = map[string][]string{NodeNameExtra: {node}}
	}
	return kubernetes.NewForConfigOrDie(cfg)
}

// bundle is the CA bundle callers mount: the ConfigMap's ca.crt.
func bundle(t *testing.T) *x509.CertPool {
	t.Helper()
	cm := &corev1.ConfigMap{}
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := admin.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: "test-host-ca"}, cm)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the CA bundle ConfigMap: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(cm.Data[BundleKey])) {
		t.Fatalf("the bundle ConfigMap holds no certificate: %q", cm.Data[BundleKey])
	}
	return pool
}

// serve runs a TLS server with r's certificates and returns its address.
func serve(t *testing.T, r *Requester) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", r.TLSConfig())
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }),
		ReadHeaderTimeout: 5 * time.Second, ErrorLog: log.New(io.Discard, "", 0)} // the placeholder's refused handshakes
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// get calls addr as a caller in the cluster does: by the Service's name, trusting pool.
func get(addr string, pool *x509.CertPool) (*tls.ConnectionState, error) {
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "test-host.wasm-system.svc", MinVersion: tls.VersionTLS12}}}
	resp, err := c.Get("https://" + addr)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return resp.TLS, nil
}

func awaitReady(t *testing.T, r *Requester) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for r.Ready() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("no certificate within a minute: %v", r.Ready())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestHostsGetTheirOwnCertificates: two hosts, each with its node's token, get certificates of their own
// (their own keys, their node in the subject) that callers trust through the published bundle for the
// Service's name; before the first is signed a host is not ready and its placeholder is not trusted.
func TestHostsGetTheirOwnCertificates(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pool := bundle(t)
	var seen []*x509.Certificate
	for _, node := range []string{"node-a", "node-b"} {
		r := &Requester{Client: as(t, policy.Requester, node), SignerName: policy.SignerName, Node: node,
			DNSNames: policy.DNSNames, Duration: time.Hour, Log: testr.New(t)}
		if r.Ready() == nil {
			t.Fatal("ready before any certificate was signed")
		}
		addr := serve(t, r)
		if _, err := get(addr, pool); err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("the placeholder certificate was trusted: %v", err)
		}
		go func() { _ = r.Start(ctx) }()
		awaitReady(t, r)
		st, err := get(addr, pool)
		if err != nil {
			t.Fatalf("%s: a call by the Service's name with the published bundle: %v", node, err)
		}
		leaf := st.PeerCertificates[0]
		if leaf.Subject.CommonName != CommonName(node) {
			t.Fatalf("subject %q, want %q", leaf.Subject.CommonName, CommonName(node))
		}
		if life := leaf.NotAfter.Sub(leaf.NotBefore); life > 2*time.Hour+time.Minute {
			t.Fatalf("valid for %s; asked for an hour (plus an hour of clock skew before)", life)
		}
		if len(leaf.ExtKeyUsage) != 1 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth {
			t.Fatalf("extended key usages %v, want server auth only", leaf.ExtKeyUsage)
		}
		seen = append(seen, leaf)
	}
	if seen[0].PublicKey.(*ecdsa.PublicKey).Equal(seen[1].PublicKey) {
		t.Fatal("two hosts serve the same key")
	}
}

// TestRefusedRequests: requests from another user, from the hosts' ServiceAccount without a pod-bound
// token, or for a name that is not the host Service's are Denied with the reason, and get no certificate;
// one approved by hand for such a name is not signed either (Failed).
func TestRefusedRequests(t *testing.T) {
	for _, c := range []struct {
		name, user, node string
		dns              []string
		want             string
	}{
		{"a namespace editor's ServiceAccount", "system:serviceaccount:team:editor", "node-a", policy.DNSNames, "only the hosts' ServiceAccount"},
		{"no pod-bound token", policy.Requester, "", policy.DNSNames, "names no node"},
		{"the API server's name", policy.Requester, "node-a", []string{"kubernetes.default.svc"}, `"kubernetes.default.svc" is not the host Service's`},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := &Requester{Client: as(t, c.user, c.node), SignerName: policy.SignerName, Node: "node-a", DNSNames: c.dns,
				Wait: 30 * time.Second, Log: testr.New(t)}
			_, _, err := r.request(context.Background())
			if err == nil || !strings.Contains(err.Error(), "Denied") || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("request: %v, want Denied: ...%s", err, c.want)
			}
		})
	}
	t.Run("approved by hand", func(t *testing.T) {
		// A signer of a name of its own, reconciled here, so that the request is approved before it looks.
		p := policy
		p.SignerName = "wasm-operator.dev/wasm-system.by-hand"
		signer := &Signer{Client: admin, Policy: p, CA: keeper}
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		kube := kubernetes.NewForConfigOrDie(adminCfg)
		csrs := kube.CertificatesV1().CertificateSigningRequests()
		csr, err := csrs.Create(context.Background(), &certv1.CertificateSigningRequest{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "by-hand-"},
			Spec: certv1.CertificateSigningRequestSpec{SignerName: p.SignerName, Usages: []certv1.KeyUsage{certv1.UsageServerAuth},
				Request: requestPEM(t, key, &x509.CertificateRequest{DNSNames: p.DNSNames})}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		// As `kubectl certificate approve` does, for the admin's own request.
		csr.Status.Conditions = []certv1.CertificateSigningRequestCondition{{Type: certv1.CertificateApproved, Status: corev1.ConditionTrue, Reason: "ByHand"}}
		if csr, err = csrs.UpdateApproval(context.Background(), csr.Name, csr, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := signer.Reconcile(context.Background(), ctrl.Request{NamespacedName: types.NamespacedName{Name: csr.Name}}); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err = awaitCertificate(ctx, csrs, csr.Name)
		if err == nil || !strings.Contains(err.Error(), "Failed") || !strings.Contains(err.Error(), "only the hosts' ServiceAccount") {
			t.Fatalf("a request approved by hand from the admin: %v, want Failed, not signed", err)
		}
	})
}

// waitBundle waits until the published bundle holds n CAs.
func waitBundle(t *testing.T, n int) *x509.CertPool {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		cm := &corev1.ConfigMap{}
		if err := admin.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: "test-host-ca"}, cm); err != nil {
			t.Fatal(err)
		}
		if strings.Count(cm.Data[BundleKey], "BEGIN CERTIFICATE") == n {
			return bundle(t)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the bundle holds %d CAs, want %d", strings.Count(cm.Data[BundleKey], "BEGIN CERTIFICATE"), n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestCARenewal (one test: the steps share the CA): a CA about to expire is replaced by a new one, and
// one whose Secret is deleted is made again, each time keeping the earlier CAs in the bundle while they
// are valid, so certificates they signed stay trusted until renewed; the signer never signs with an
// expired CA.
func TestCARenewal(t *testing.T) {
	ctx := context.Background()
	r := &Requester{Client: as(t, policy.Requester, "node-c"), SignerName: policy.SignerName, Node: "node-c",
		DNSNames: policy.DNSNames, Log: testr.New(t)}
	first, _, err := r.request(ctx)
	if err != nil {
		t.Fatal(err)
	}
	verify := func(c *tls.Certificate, pool *x509.CertPool) error {
		_, err := c.Leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: policy.DNSNames[0]})
		return err
	}

	// A CA with a day left (less than the 30 days of RotateBefore), as if ten years had passed.
	short, err := certs.NewCAValidFor("short", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := short.KeyPEM()
	sec := &corev1.Secret{}
	if err := admin.Get(ctx, types.NamespacedName{Namespace: ns, Name: "test-host-ca-key"}, sec); err != nil {
		t.Fatal(err)
	}
	sec.Data = map[string][]byte{corev1.TLSCertKey: short.PEM, corev1.TLSPrivateKeyKey: key}
	if err := admin.Update(ctx, sec); err != nil {
		t.Fatal(err)
	}
	pool := waitBundle(t, 3) // the new CA, the short one, the first
	if err := verify(first, pool); err != nil {
		t.Fatalf("a certificate of the first CA after two renewals: %v", err)
	}
	second, _, err := r.request(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if second.Leaf.Issuer.CommonName == "short" || verify(second, pool) != nil {
		t.Fatalf("signed by %q after the short CA was replaced: %v", second.Leaf.Issuer.CommonName, verify(second, pool))
	}

	// The Secret deleted: a new CA, and the history keeps the others.
	before := pool
	if err := admin.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "test-host-ca-key"}}); err != nil {
		t.Fatal(err)
	}
	pool = waitBundle(t, 4)
	third, _, err := r.request(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var unknown x509.UnknownAuthorityError
	if err := verify(third, before); !errors.As(err, &unknown) {
		t.Fatalf("a certificate of the new CA against the old bundle: %v, want unknown authority", err)
	}
	for i, c := range []*tls.Certificate{first, second, third} {
		if err := verify(c, pool); err != nil {
			t.Fatalf("certificate %d against the bundle: %v", i+1, err)
		}
	}

	// An expired CA (no Generate to replace it) signs nothing.
	expired, _ := certs.NewCAValidFor("expired", time.Minute)
	if _, err := expired.Sign(&first.Leaf.PublicKey, "x", policy.DNSNames, time.Now().Add(time.Hour)); err == nil || !strings.Contains(err.Error(), "renew or replace it") {
		t.Fatalf("signed with a CA that expires within a minute: %v", err)
	}
}

// TestBundleIsNotReadBack: whoever may write the bundle ConfigMap cannot make the controller trust a CA
// of theirs: the keeper writes the bundle back from its own history, and its pool never had it.
func TestBundleIsNotReadBack(t *testing.T) {
	ctx := context.Background()
	foreign, _ := certs.NewCA("foreign")
	cm := &corev1.ConfigMap{}
	if err := admin.Get(ctx, types.NamespacedName{Namespace: ns, Name: "test-host-ca"}, cm); err != nil {
		t.Fatal(err)
	}
	cm.Data[BundleKey] += string(foreign.PEM)
	if err := admin.Update(ctx, cm); err != nil {
		t.Fatal(err)
	}
	crt, _, err := foreign.Issue("host", policy.DNSNames, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(crt)
	leaf, _ := x509.ParseCertificate(b.Bytes)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if err := admin.Get(ctx, types.NamespacedName{Namespace: ns, Name: "test-host-ca"}, cm); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(cm.Data[BundleKey], string(foreign.PEM)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the foreign CA stays in the published bundle")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: keeper.Pool(), DNSName: policy.DNSNames[0]}); err == nil {
		t.Fatal("the controller trusts a certificate of a CA written into the ConfigMap")
	}
}

// TestPendingRequestAskedAgain: a host whose request is not signed in time (the signer is down) waits
// on the same request at its next attempt instead of making another.
func TestPendingRequestAskedAgain(t *testing.T) {
	const nobody = "wasm-operator.dev/wasm-system.nobody"
	r := &Requester{Client: as(t, policy.Requester, "node-d"), SignerName: nobody, Node: "node-d",
		DNSNames: policy.DNSNames, Wait: 300 * time.Millisecond, Log: testr.New(t)}
	for range 3 {
		if _, _, err := r.request(context.Background()); !errors.Is(err, errNotYet) {
			t.Fatalf("request to a signer nobody runs: %v, want not signed yet", err)
		}
	}
	list, err := kubernetes.NewForConfigOrDie(adminCfg).CertificatesV1().CertificateSigningRequests().List(context.Background(),
		metav1.ListOptions{FieldSelector: "spec.signerName=" + nobody})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 {
		t.Fatalf("%d requests after three attempts, want 1 asked three times", len(list.Items))
	}
}

func TestRenewIn(t *testing.T) {
	for _, c := range []struct {
		life     time.Duration
		min, max time.Duration
	}{
		{24 * time.Hour, 24*time.Hour*2/3 - 24*time.Hour/10, 24 * time.Hour * 2 / 3},
		{time.Minute, 34 * time.Second, 40 * time.Second},
		{30 * time.Second, minRenewal, minRenewal},
		{0, minRenewal, minRenewal},
		{-time.Hour, minRenewal, minRenewal}, // an expired one (the clock): no panic, no spin
	} {
		for range 20 {
			if got := renewIn(c.life); got < c.min || got > c.max {
				t.Fatalf("renewIn(%s) = %s, want within [%s, %s]", c.life, got, c.min, c.max)
			}
		}
	}
}
