package controllers

import (
	"context"
	"fmt"
	"reflect"
	"sort"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"

	"github.com/wasm-operator/wasm-operator/internal/hostcontract"
)

// hostSetInterval is how often the host set is recomputed: a Lease expiring is noticed within it.
const hostSetInterval = time.Second

// hostSet keeps the set of live node hosts (unexpired Leases, with their Node's labels) for every reconcile
// to share, and sends an event when it changes, so that every plugin's target set is recomputed then, and
// only then. Lease renewals, every few seconds per host, change nothing and cost nothing.
type hostSet struct {
	client    client.Client
	namespace string
	now       func() time.Time

	mu      sync.Mutex
	current []Host
	valid   bool
	ch      chan event.GenericEvent
}

func (h *hostSet) events() <-chan event.GenericEvent { return h.channel() }

func (h *hostSet) channel() chan event.GenericEvent {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ch == nil {
		h.ch = make(chan event.GenericEvent, 1)
	}
	return h.ch
}

// NeedLeaderElection makes it run with the controller it feeds.
func (h *hostSet) NeedLeaderElection() bool { return true }

// Start recomputes the set every hostSetInterval until ctx ends.
func (h *hostSet) Start(ctx context.Context) error {
	ch := h.channel()
	t := time.NewTicker(hostSetInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		hosts, err := h.compute(ctx)
		if err != nil {
			ctrl.LoggerFrom(ctx).Error(err, "list node hosts")
			continue
		}
		h.mu.Lock()
		changed := !h.valid || !reflect.DeepEqual(h.current, hosts)
		h.current, h.valid = hosts, true
		h.mu.Unlock()
		if changed {
			select {
			case ch <- event.GenericEvent{Object: &coordinationv1.Lease{}}:
			default: // an event is already pending: it covers this change too
			}
		}
	}
}

// get returns the live hosts, computing them when no snapshot exists yet.
func (h *hostSet) get(ctx context.Context) ([]Host, error) {
	h.mu.Lock()
	hosts, ok := h.current, h.valid
	h.mu.Unlock()
	if ok {
		return hosts, nil
	}
	return h.compute(ctx)
}

// compute lists the hosts whose Lease has not expired, with their Node's labels, sorted by node.
func (h *hostSet) compute(ctx context.Context) ([]Host, error) {
	var leases coordinationv1.LeaseList
	if err := h.client.List(ctx, &leases, client.InNamespace(h.namespace), client.HasLabels{hostcontract.LeaseLabel},
		client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("list host leases: %w", err)
	}
	now := h.now()
	hosts := []Host{}
	for i := range leases.Items {
		if !hostcontract.LeaseLive(&leases.Items[i], now) {
			continue
		}
		node := hostcontract.LeaseNode(leases.Items[i].Name)
		host := Host{Node: node}
		var n corev1.Node
		if err := h.client.Get(ctx, types.NamespacedName{Name: node}, &n, client.UnsafeDisableDeepCopy); err == nil {
			host.Labels = n.Labels
		} else if !apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("read node %s: %w", node, err)
		}
		hosts = append(hosts, host)
	}
	sort.Slice(hosts, func(i, j int) bool { return hosts[i].Node < hosts[j].Node })
	return hosts, nil
}
