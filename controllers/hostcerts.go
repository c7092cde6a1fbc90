package controllers

import (
	"fmt"
	"strings"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/wasm-operator/wasm-operator/internal/hostcerts"
)

// The signer of the hosts' serving certificates (internal/hostcerts) reads, approves and signs the
// CertificateSigningRequests of its signer name (wasm-operator.dev/<namespace>.<release>-host), and
// writes the CA Secret and the bundle ConfigMap of its namespace. Its permissions are not generated from
// markers: the chart grants them only when the controller signs (templates/rbac-controller-signer.yaml),
// for its one signer name.

// HostSignerOptions configure the signer of the hosts' serving certificates.
type HostSignerOptions struct {
	// SignerName is the spec.signerName the hosts ask for (their --tls-signer-name); empty: no signer.
	SignerName string
	// Requester is the hosts' ServiceAccount as namespace/name.
	Requester string
	// DNSNames are the host Service's names, the only ones a host certificate may hold.
	DNSNames []string
	// MaxDuration caps the certificates' lifetime.
	MaxDuration time.Duration
	// Namespace holds the CA Secret and the bundle ConfigMap.
	Namespace, CASecret, CAHistorySecret, CABundleConfigMap string
	// GenerateCA makes the CA when its Secret is missing.
	GenerateCA bool
}

// SetupHostSigner adds the signer and its CA keeper to mgr, and returns the keeper, whose Pool the
// controller trusts when it calls hosts. It returns nil when no signer is configured.
func SetupHostSigner(mgr ctrl.Manager, o HostSignerOptions) (*hostcerts.CAKeeper, error) {
	if o.SignerName == "" {
		return nil, nil
	}
	ns, name, ok := strings.Cut(o.Requester, "/")
	if !ok || ns == "" || name == "" {
		return nil, fmt.Errorf("--host-service-account %q: want namespace/name of the hosts' ServiceAccount", o.Requester)
	}
	if len(o.DNSNames) == 0 || o.CASecret == "" {
		return nil, fmt.Errorf("--host-signer-name needs --host-dns-names (the host Service's names) and --host-ca-secret")
	}
	keeper := &hostcerts.CAKeeper{Reader: mgr.GetAPIReader(), Writer: mgr.GetClient(), Namespace: o.Namespace,
		SecretName: o.CASecret, HistorySecretName: o.CAHistorySecret, ConfigMapName: o.CABundleConfigMap, Generate: o.GenerateCA,
		Labels: map[string]string{"app.kubernetes.io/managed-by": "wasm-operator", "app.kubernetes.io/component": "host"},
		Log:    mgr.GetLogger().WithName("hostcerts")}
	s := &hostcerts.Signer{Client: mgr.GetClient(), CA: keeper, Policy: hostcerts.Policy{
		SignerName: o.SignerName, Requester: "system:serviceaccount:" + ns + ":" + name,
		DNSNames: o.DNSNames, MaxDuration: max(o.MaxDuration, hostcerts.MinDuration)}}
	return keeper, s.SetupWithManager(mgr)
}
