package hostcerts

import (
	"context"
	"fmt"
	"time"

	certv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
)

// Signer approves and signs the hosts' CertificateSigningRequests of its Policy's signer, and denies
// the others of that signer with the reason Review gives. Requests approved by someone else are reviewed
// all the same before they are signed (Failed when they do not pass): approval alone never makes the
// signer issue a certificate outside its policy.
type Signer struct {
	Client client.Client
	Policy Policy
	CA     *CAKeeper
}

// Reasons of the conditions the signer sets.
const (
	ReasonApproved = "HostIdentityVerified"
	ReasonDenied   = "NotAHostRequest"
)

// Reconcile handles one request.
func (s *Signer) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	csr := &certv1.CertificateSigningRequest{}
	if err := s.Client.Get(ctx, req.NamespacedName, csr); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if csr.Spec.SignerName != s.Policy.SignerName || len(csr.Status.Certificate) > 0 ||
		has(csr, certv1.CertificateDenied) || has(csr, certv1.CertificateFailed) {
		return ctrl.Result{}, nil
	}
	grant, rerr := Review(csr, s.Policy)
	logger := log.FromContext(ctx).WithValues("csr", csr.Name, "requester", csr.Spec.Username)
	if !has(csr, certv1.CertificateApproved) {
		cond := certv1.CertificateSigningRequestCondition{Type: certv1.CertificateApproved, Status: corev1.ConditionTrue,
			Reason: ReasonApproved, Message: "a host's request for its serving certificate of node " + grant.Node}
		if rerr != nil {
			cond = certv1.CertificateSigningRequestCondition{Type: certv1.CertificateDenied, Status: corev1.ConditionTrue,
				Reason: ReasonDenied, Message: rerr.Error()}
			logger.Info("denied a certificate request", "reason", rerr.Error())
		}
		cond.LastUpdateTime = metav1.Now()
		csr.Status.Conditions = append(csr.Status.Conditions, cond)
		if err := s.Client.SubResource("approval").Update(ctx, csr); err != nil {
			return ctrl.Result{}, client.IgnoreNotFound(fmt.Errorf("update the approval of %s: %w", csr.Name, err))
		}
		if rerr != nil {
			return ctrl.Result{}, nil
		}
	} else if rerr != nil {
		csr.Status.Conditions = append(csr.Status.Conditions, certv1.CertificateSigningRequestCondition{
			Type: certv1.CertificateFailed, Status: corev1.ConditionTrue, Reason: ReasonDenied,
			Message: "approved, but not signed: " + rerr.Error(), LastUpdateTime: metav1.Now()})
		return ctrl.Result{}, client.IgnoreNotFound(s.Client.Status().Update(ctx, csr))
	}
	ca, err := s.CA.Signing(ctx)
	if err != nil {
		return ctrl.Result{}, err
	}
	pem, err := ca.Sign(grant.PublicKey, CommonName(grant.Node), grant.DNSNames, time.Now().Add(grant.Duration))
	if err != nil {
		return ctrl.Result{}, err
	}
	csr.Status.Certificate = pem
	if err := s.Client.Status().Update(ctx, csr); err != nil {
		if apierrors.IsConflict(err) {
			return ctrl.Result{Requeue: true}, nil
		}
		return ctrl.Result{}, client.IgnoreNotFound(fmt.Errorf("write the certificate of %s: %w", csr.Name, err))
	}
	logger.Info("signed a host serving certificate", "node", grant.Node, "validFor", grant.Duration.String())
	return ctrl.Result{}, nil
}

func has(csr *certv1.CertificateSigningRequest, t certv1.RequestConditionType) bool {
	for _, c := range csr.Status.Conditions {
		if c.Type == t && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

// SetupWithManager runs the signer (on the leader) and its CA keeper. The manager's cache must watch
// only the requests of this signer (a field selector on spec.signerName: see CacheByObject).
func (s *Signer) SetupWithManager(mgr ctrl.Manager) error {
	if err := mgr.Add(s.CA); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).Named("hostcerts").
		For(&certv1.CertificateSigningRequest{}, builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			csr, ok := o.(*certv1.CertificateSigningRequest)
			return ok && csr.Spec.SignerName == s.Policy.SignerName
		}))).
		Complete(s)
}
