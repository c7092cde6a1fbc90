package hostcerts

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/wasm-operator/wasm-operator/internal/certs"
)

// BundleKey is the key of the CA bundle in the ConfigMap callers mount (and of the root in the CA
// Secret, as cert-manager writes it).
const BundleKey = "ca.crt"

// bundleKeep is how many CA certificates the published bundle holds: the current one and the previous
// ones still valid, so that certificates signed before a CA was replaced keep being trusted until they
// are renewed (a day).
const bundleKeep = 4

// CAKeeper holds the signer's CA, read from a kubernetes.io/tls Secret (tls.crt, tls.key; an
// intermediate CA that cert-manager issues works as well), and publishes the CA bundle callers trust in a
// ConfigMap. The bundle is the signing CA itself, never the root above an intermediate (any certificate
// its issuer signs for the host Service's name would be trusted too), and the CAs it signed with before
// while they are valid, remembered in a Secret of their own (HistorySecretName): the ConfigMap is only
// written, never read back into trust, so whoever may write it cannot add a CA. With Generate it makes
// the CA and its Secret when the Secret does not exist, so an install needs no certificate tool and
// `helm template` renders no key, and replaces the CA before it expires.
type CAKeeper struct {
	// Reader reads the Secret and the ConfigMap from the API server (not a cache: the controller does
	// not watch every Secret's content).
	Reader client.Reader
	// Writer creates the Secret (Generate) and writes the ConfigMap.
	Writer                               client.Client
	Namespace, SecretName, ConfigMapName string
	// HistorySecretName keeps the CAs signed with before, still valid (key ca.crt); empty keeps none.
	HistorySecretName string
	// Generate makes the CA when its Secret is missing, and a new one when it has less than
	// RotateBefore left; otherwise the keeper waits for it (cert-manager issues and renews it).
	Generate bool
	// RotateBefore defaults to 30 days.
	RotateBefore time.Duration
	// Labels are set on the objects the keeper creates.
	Labels map[string]string
	// Interval is how often Start checks the Secret and the bundle (default a minute).
	Interval time.Duration
	Log      logr.Logger

	mu     sync.Mutex
	ca     *certs.CA
	rv     string // resourceVersion of the Secret ca was read from
	bundle []byte // the last bundle published
	pool   *x509.CertPool
}

// Current returns the CA of the Secret, reading it again when the Secret changed, and keeps the bundle
// published.
func (k *CAKeeper) Current(ctx context.Context) (*certs.CA, error) {
	sec := &corev1.Secret{}
	err := k.Reader.Get(ctx, types.NamespacedName{Namespace: k.Namespace, Name: k.SecretName}, sec)
	if apierrors.IsNotFound(err) && k.Generate {
		sec, err = k.generate(ctx)
	}
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("the hosts' CA Secret %s/%s does not exist yet: cert-manager issues it from host.tls.certManager.issuerRef (kubectl describe certificate -n %s)",
			k.Namespace, k.SecretName, k.Namespace)
	}
	if err != nil {
		return nil, fmt.Errorf("read the hosts' CA Secret %s/%s: %w", k.Namespace, k.SecretName, err)
	}
	ca, err := k.load(sec)
	if err != nil {
		return nil, err
	}
	if k.Generate && time.Until(ca.NotAfter()) < k.rotateBefore() {
		if ca, err = k.rotate(ctx, sec, ca); err != nil {
			return nil, err
		}
	}
	b, err := k.remember(ctx, ca.PEM)
	if err != nil {
		return nil, err
	}
	if err := k.publish(ctx, b); err != nil {
		return nil, err
	}
	return ca, nil
}

// Signing returns the CA to sign with: the one last read (Start reads it every Interval, and publishes
// the bundle then) while it has more than an hour left, else the Secret's read now (Current). A signing
// costs no API call: a thousand hosts renewing together cost none beyond their requests.
func (k *CAKeeper) Signing(ctx context.Context) (*certs.CA, error) {
	k.mu.Lock()
	ca := k.ca
	k.mu.Unlock()
	if ca != nil && time.Until(ca.NotAfter()) > time.Hour {
		return ca, nil
	}
	return k.Current(ctx)
}

func (k *CAKeeper) rotateBefore() time.Duration {
	if k.RotateBefore > 0 {
		return k.RotateBefore
	}
	return 30 * 24 * time.Hour
}

// load parses the CA of sec, again only when sec changed.
func (k *CAKeeper) load(sec *corev1.Secret) (*certs.CA, error) {
	k.mu.Lock()
	ca, rv := k.ca, k.rv
	k.mu.Unlock()
	if ca != nil && rv == sec.ResourceVersion {
		return ca, nil
	}
	ca, err := certs.LoadCA(sec.Data[corev1.TLSCertKey], sec.Data[corev1.TLSPrivateKeyKey])
	if err != nil {
		return nil, fmt.Errorf("the hosts' CA Secret %s/%s: %w", k.Namespace, k.SecretName, err)
	}
	k.mu.Lock()
	k.ca, k.rv = ca, sec.ResourceVersion
	k.mu.Unlock()
	return ca, nil
}

// rotate replaces the CA of sec, which expires soon, by a new one; remember keeps the old one trusted.
func (k *CAKeeper) rotate(ctx context.Context, sec *corev1.Secret, old *certs.CA) (*certs.CA, error) {
	ca, data, err := newCAData(k.SecretName)
	if err != nil {
		return nil, err
	}
	// The old one first goes into the history, so no host certificate it signed is ever untrusted.
	if _, err := k.remember(ctx, old.PEM); err != nil {
		return nil, err
	}
	sec.Data = data
	if err := k.Writer.Update(ctx, sec); err != nil {
		return nil, fmt.Errorf("replace the hosts' CA, which expires at %s: %w", old.NotAfter().Format(time.RFC3339), err)
	}
	k.Log.Info("replaced the hosts' CA before it expires", "secret", k.SecretName, "old", old.NotAfter(), "new", ca.NotAfter())
	return k.load(sec)
}

// remember returns the bundle of cur and the CAs signed with before, kept in the history Secret.
func (k *CAKeeper) remember(ctx context.Context, cur []byte) ([]byte, error) {
	if k.HistorySecretName == "" {
		return cur, nil
	}
	h := &corev1.Secret{}
	err := k.Reader.Get(ctx, types.NamespacedName{Namespace: k.Namespace, Name: k.HistorySecretName}, h)
	if err != nil && !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("read the hosts' CA history %s/%s: %w", k.Namespace, k.HistorySecretName, err)
	}
	want := certs.Bundle(cur, h.Data[BundleKey], time.Now(), bundleKeep)
	switch {
	case apierrors.IsNotFound(err):
		h = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: k.Namespace, Name: k.HistorySecretName, Labels: k.Labels},
			Data: map[string][]byte{BundleKey: want}}
		if err := k.Writer.Create(ctx, h); err != nil {
			return nil, fmt.Errorf("create the hosts' CA history %s/%s: %w", k.Namespace, k.HistorySecretName, err)
		}
	case !bytes.Equal(h.Data[BundleKey], want):
		if h.Data == nil {
			h.Data = map[string][]byte{}
		}
		h.Data[BundleKey] = want
		if err := k.Writer.Update(ctx, h); err != nil {
			return nil, fmt.Errorf("update the hosts' CA history %s/%s: %w", k.Namespace, k.HistorySecretName, err)
		}
	}
	return want, nil
}

func newCAData(name string) (*certs.CA, map[string][]byte, error) {
	ca, err := certs.NewCA(name)
	if err != nil {
		return nil, nil, err
	}
	key, err := ca.KeyPEM()
	if err != nil {
		return nil, nil, err
	}
	return ca, map[string][]byte{corev1.TLSCertKey: ca.PEM, corev1.TLSPrivateKeyKey: key, BundleKey: ca.PEM}, nil
}

func (k *CAKeeper) generate(ctx context.Context) (*corev1.Secret, error) {
	ca, data, err := newCAData(k.SecretName)
	if err != nil {
		return nil, err
	}
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: k.Namespace, Name: k.SecretName, Labels: k.Labels},
		Type:       corev1.SecretTypeTLS,
		Data:       data,
	}
	if err := k.Writer.Create(ctx, sec); err != nil {
		if apierrors.IsAlreadyExists(err) { // another replica made it first: use theirs
			err = k.Reader.Get(ctx, client.ObjectKeyFromObject(sec), sec)
			return sec, err
		}
		return nil, fmt.Errorf("create the hosts' CA Secret %s/%s: %w", k.Namespace, k.SecretName, err)
	}
	k.Log.Info("made the hosts' CA", "secret", k.SecretName, "notAfter", ca.NotAfter())
	return sec, nil
}

// publish writes the bundle into the ConfigMap callers mount, whatever it holds.
func (k *CAKeeper) publish(ctx context.Context, want []byte) error {
	if k.ConfigMapName == "" {
		return k.setBundle(want)
	}
	cm := &corev1.ConfigMap{}
	err := k.Reader.Get(ctx, types.NamespacedName{Namespace: k.Namespace, Name: k.ConfigMapName}, cm)
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("read the hosts' CA bundle ConfigMap %s/%s: %w", k.Namespace, k.ConfigMapName, err)
	}
	if apierrors.IsNotFound(err) {
		cm = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: k.Namespace, Name: k.ConfigMapName, Labels: k.Labels},
			Data: map[string]string{BundleKey: string(want)}}
		if err := k.Writer.Create(ctx, cm); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create the hosts' CA bundle ConfigMap %s/%s: %w", k.Namespace, k.ConfigMapName, err)
		}
	} else if cm.Data[BundleKey] != string(want) {
		if cm.Data == nil {
			cm.Data = map[string]string{}
		}
		cm.Data[BundleKey] = string(want)
		if err := k.Writer.Update(ctx, cm); err != nil {
			return fmt.Errorf("update the hosts' CA bundle ConfigMap %s/%s: %w", k.Namespace, k.ConfigMapName, err)
		}
		k.Log.Info("published the hosts' CA bundle", "configMap", k.ConfigMapName)
	}
	return k.setBundle(want)
}

func (k *CAKeeper) setBundle(b []byte) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if bytes.Equal(b, k.bundle) {
		return nil
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return fmt.Errorf("the hosts' CA bundle holds no certificate")
	}
	k.bundle, k.pool = b, pool
	return nil
}

// Pool is the bundle last published (nil before the first): what the controller trusts when it calls
// hosts itself.
func (k *CAKeeper) Pool() *x509.CertPool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.pool
}

// Start keeps the CA and the bundle current until ctx ends: at once, so the bundle exists before the
// first host asks, and then every Interval (a renewed intermediate, a replaced root, a deleted
// ConfigMap). It runs on the leader only.
func (k *CAKeeper) Start(ctx context.Context) error {
	every := k.Interval
	if every <= 0 {
		every = time.Minute
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if _, err := k.Current(ctx); err != nil && ctx.Err() == nil {
			k.Log.Error(err, "hosts' CA")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// NeedLeaderElection: only the leader creates the CA and writes the bundle.
func (k *CAKeeper) NeedLeaderElection() bool { return true }
