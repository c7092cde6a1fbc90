package host

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/wasm-operator/wasm-operator/internal/hostcontract"
)

// leaseKeeper holds the node's Lease for this host. A host that starts takes the Lease over from whoever
// holds it (the host it replaces: the old pod of a rolling update, or its own previous process), once; after
// that it renews it while it is the holder, and yields for good when another identity took it, unless that
// one lets it expire. So two hosts of one node, as a surge makes, never write in turns: the newer reports,
// the older only serves calls until it stops, and neither deletes or overwrites what the other holds.
type leaseKeeper struct {
	r *Reconciler

	// registered is set once the host first held the Lease (readiness).
	registered atomic.Bool
	held       atomic.Bool

	mu sync.Mutex
	// last is the Lease as this host last wrote it, for the release's preconditions.
	last *coordinationv1.Lease
	// takenOver is set once the start's takeover succeeded.
	takenOver bool
	// liveAtStart reports whether the Lease was live when this host took it: the report it finds was
	// then counted by the controller, and is kept while this host loads the same plugins.
	liveAtStart bool
}

// NeedLeaderElection is false: every host runs its own.
func (k *leaseKeeper) NeedLeaderElection() bool { return false }

func (k *leaseKeeper) holds() bool { return k.held.Load() }

// Start takes the Lease, then renews it every quarter of its duration, with a little jitter so that the
// renewals of a thousand hosts started together spread out.
func (k *leaseKeeper) Start(ctx context.Context) error {
	r := k.r
	log := ctrl.LoggerFrom(ctx).WithValues("node", r.Node, "identity", r.Identity)
	backoff := time.Second
	for {
		err := k.renew(ctx)
		if err == nil {
			break
		}
		log.Error(err, "take the host lease; retrying", "in", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, r.LeaseDuration/4)
	}
	k.registered.Store(true)
	r.report.changed()
	period := r.LeaseDuration / 4
	for {
		jitter := time.Duration(rand.Int64N(int64(period/20) + 1))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(period + jitter):
		}
		wasHeld := k.held.Load()
		if err := k.renew(ctx); err != nil {
			log.Error(err, "renew host lease")
		}
		if k.held.Load() != wasHeld {
			log.Info("host lease holder changed", "held", k.held.Load())
			r.report.changed()
			if !k.held.Load() {
				r.yielded()
			}
		}
	}
}

// renew takes or renews the Lease, or yields it: see leaseKeeper.
func (k *leaseKeeper) renew(ctx context.Context) error {
	r := k.r
	now := time.Now()
	name := hostcontract.LeaseName(r.Node)
	k.mu.Lock()
	last := k.last
	k.mu.Unlock()
	if last != nil && k.held.Load() {
		// The holder renews the Lease as it last wrote it, without reading it first; a conflict (someone
		// wrote it since) makes the next renewal read it.
		l := last.DeepCopy()
		l.Spec.RenewTime = &metav1.MicroTime{Time: now}
		if err := r.Update(ctx, l); err != nil {
			k.mu.Lock()
			k.last = nil
			k.mu.Unlock()
			return fmt.Errorf("renew lease %s: %w", name, err)
		}
		k.mu.Lock()
		k.last = l
		k.mu.Unlock()
		return nil
	}
	var l coordinationv1.Lease
	err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: r.Namespace, Name: name}, &l)
	if apierrors.IsNotFound(err) {
		l = coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: r.Namespace,
			Labels: map[string]string{hostcontract.LeaseLabel: r.Node}}}
		k.take(&l, now)
		if err := r.Create(ctx, &l); err != nil {
			return fmt.Errorf("create lease %s: %w", name, err)
		}
		k.took(&l, false)
		return nil
	}
	if err != nil {
		return fmt.Errorf("read lease %s: %w", name, err)
	}
	k.mu.Lock()
	takenOver := k.takenOver
	k.mu.Unlock()
	holder := ptr.Deref(l.Spec.HolderIdentity, "")
	live := hostcontract.LeaseLive(&l, now)
	switch {
	case holder == r.Identity:
		l.Spec.RenewTime = &metav1.MicroTime{Time: now}
		l.Spec.LeaseDurationSeconds = ptr.To(int32(r.LeaseDuration / time.Second))
	case !takenOver || !live:
		// The start's takeover, or a Lease its holder let expire.
		k.take(&l, now)
		l.Spec.LeaseTransitions = ptr.To(ptr.Deref(l.Spec.LeaseTransitions, 0) + 1)
	default:
		k.held.Store(false) // a newer host of this node holds it
		return nil
	}
	if l.Labels == nil {
		l.Labels = map[string]string{}
	}
	l.Labels[hostcontract.LeaseLabel] = r.Node
	if err := r.Update(ctx, &l); err != nil {
		// A conflict: someone wrote it since the read; the next renewal reads it again.
		return fmt.Errorf("update lease %s: %w", name, err)
	}
	k.took(&l, live && holder != "")
	return nil
}

func (k *leaseKeeper) take(l *coordinationv1.Lease, now time.Time) {
	t := metav1.NewMicroTime(now)
	l.Spec.HolderIdentity = ptr.To(k.r.Identity)
	l.Spec.LeaseDurationSeconds = ptr.To(int32(k.r.LeaseDuration / time.Second))
	l.Spec.AcquireTime, l.Spec.RenewTime = &t, &t
}

// took records a successful write of the Lease as holder.
func (k *leaseKeeper) took(l *coordinationv1.Lease, wasLive bool) {
	k.mu.Lock()
	if !k.takenOver {
		k.takenOver, k.liveAtStart = true, wasLive
	}
	k.last = l.DeepCopy()
	k.mu.Unlock()
	k.held.Store(true)
}

// keepsStartReport reports whether the report found at start may stand while this host loads: the Lease
// was live when this host took it over.
func (k *leaseKeeper) keepsStartReport() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.liveAtStart
}

// release deletes the Lease if it is still the one this host last wrote (same UID and resourceVersion):
// a Lease another host took since is left alone.
func (k *leaseKeeper) release(ctx context.Context) error {
	k.mu.Lock()
	last := k.last
	k.mu.Unlock()
	if last == nil {
		return nil
	}
	k.held.Store(false)
	err := k.r.Delete(ctx, last, client.Preconditions{UID: &last.UID, ResourceVersion: &last.ResourceVersion})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil
	}
	return err
}
