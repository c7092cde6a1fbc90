package host

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wasmv1 "github.com/wasm-operator/wasm-operator/api/v1alpha1"
	"github.com/wasm-operator/wasm-operator/internal/hostcontract"
)

// maxReportMessage bounds an entry's message, so that a host's report of many failing plugins stays well
// inside an object's size limit.
const maxReportMessage = 512

// reporter writes the node's WasmHost: one entry per plugin the host has state for. It writes only when an
// entry changed (phase, digest, generation, message), at most once per ReportInterval, and only while the
// host holds the node's Lease.
type reporter struct {
	r     *Reconciler
	dirty chan struct{}

	// Owned by the Start goroutine (and by clear, after Start returned).
	obj       *wasmv1.WasmHost // as last read or written
	published map[types.NamespacedName]wasmv1.HostPlugin
	// carried are the entries found at start, kept for plugins this host has not loaded yet while the
	// start grace lasts, when the Lease was live as it took it (the controller counted them).
	carried   map[types.NamespacedName]wasmv1.HostPlugin
	startedAt time.Time
}

// NeedLeaderElection is false: every host reports its own node.
func (p *reporter) NeedLeaderElection() bool { return false }

// changed asks for a report; calls within one ReportInterval make one write.
func (p *reporter) changed() {
	select {
	case p.dirty <- struct{}{}:
	default:
	}
}

func (p *reporter) Start(ctx context.Context) error {
	r := p.r
	log := ctrl.LoggerFrom(ctx).WithValues("node", r.Node)
	p.startedAt = time.Now()
	var lastWrite time.Time
	// interval doubles, up to MaxReportInterval, while changes keep coming (plugins applied by the
	// hundred, a node's plugins loading after a restart), and is ReportInterval again after a quiet
	// spell: a burst costs a few writes of the host's report, not one a second for its whole length.
	interval := r.ReportInterval
	recheck := time.NewTimer(time.Hour)
	defer recheck.Stop()
	first := true
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-p.dirty:
		case <-recheck.C:
		}
		if !r.lease.holds() {
			continue // another host of this node reports; or the Lease is not taken yet
		}
		if first {
			if err := p.load(ctx); err != nil {
				log.Error(err, "read the host report")
				p.retryIn(recheck, time.Second)
				continue
			}
			first = false
		}
		if since := time.Since(lastWrite); since > 2*interval {
			interval = r.ReportInterval
		}
		if wait := interval - time.Since(lastWrite); wait > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(wait):
			}
		}
		entries, next := p.desired(time.Now())
		wrote, err := p.write(ctx, entries)
		if err != nil {
			log.Error(err, "write the host report")
			p.obj = nil // read it again: a conflict means someone else wrote it
			next = time.Second
		} else if wrote {
			if !lastWrite.IsZero() && time.Since(lastWrite) <= 2*interval {
				interval = min(2*interval, MaxReportInterval)
			}
			lastWrite = time.Now()
		}
		// A load still in its grace is looked at again when the grace ends.
		p.retryIn(recheck, min(next, r.LoadingGrace))
	}
}

func (p *reporter) retryIn(t *time.Timer, d time.Duration) {
	if !t.Stop() {
		select {
		case <-t.C:
		default:
		}
	}
	t.Reset(d)
}

// load reads the node's WasmHost as it stands, left by this host's previous process or the host it
// replaces.
func (p *reporter) load(ctx context.Context) error {
	var obj wasmv1.WasmHost
	err := p.r.APIReader.Get(ctx, types.NamespacedName{Name: p.r.Node}, &obj)
	if apierrors.IsNotFound(err) {
		p.obj = nil
		return nil
	}
	if err != nil {
		return err
	}
	p.obj = &obj
	p.published = entryMap(obj.Status.Plugins)
	if p.r.lease.keepsStartReport() {
		p.carried = entryMap(obj.Status.Plugins)
	}
	return nil
}

func entryMap(list []wasmv1.HostPlugin) map[types.NamespacedName]wasmv1.HostPlugin {
	m := make(map[types.NamespacedName]wasmv1.HostPlugin, len(list))
	for _, e := range list {
		m[types.NamespacedName{Namespace: e.Namespace, Name: e.Name}] = e
	}
	return m
}

// desired builds the report from the loader's states at now, and says when it should be built again (a
// grace ending). A plugin loading for less than LoadingGrace keeps its last published entry (none if it
// had none); a plugin known only from the start's report keeps that entry for LoadingGrace after start.
// An entry whose phase, digest, generation and message did not change keeps its since time.
func (p *reporter) desired(now time.Time) ([]wasmv1.HostPlugin, time.Duration) {
	r := p.r
	next := time.Hour
	soon := func(at time.Time) {
		if d := at.Sub(now); d > 0 && d < next {
			next = d
		}
	}
	keys := r.Loader.Keys()
	seen := make(map[types.NamespacedName]bool, len(keys))
	var out []wasmv1.HostPlugin
	prev := func(k types.NamespacedName) (wasmv1.HostPlugin, bool) {
		if e, ok := p.published[k]; ok {
			return e, true
		}
		e, ok := p.carried[k]
		return e, ok
	}
	for _, k := range keys {
		st, ok := r.Loader.State(k)
		if !ok {
			continue
		}
		seen[k] = true
		if st.Phase == wasmv1.NodePhaseLoading && now.Sub(st.Since) < r.LoadingGrace {
			soon(st.Since.Add(r.LoadingGrace))
			if e, ok := prev(k); ok {
				out = append(out, e)
			}
			continue
		}
		e := wasmv1.HostPlugin{Namespace: k.Namespace, Name: k.Name, Generation: st.Generation, Digest: st.Digest,
			Phase: st.Phase, Message: truncate(st.Message, maxReportMessage), Since: &metav1.Time{Time: st.Since.Truncate(time.Second)}}
		old, had := prev(k)
		if r.Schedules != nil && st.Phase == wasmv1.NodePhaseReady {
			e.FailingSchedules = FailingSchedules(r.Schedules.Statuses(k), old.FailingSchedules, now)
		}
		if had && hostcontract.SameEntry(old, e) {
			e.Since = old.Since
		}
		out = append(out, e)
	}
	if until := p.startedAt.Add(r.LoadingGrace); now.Before(until) {
		for k, e := range p.carried {
			if !seen[k] {
				out = append(out, e)
			}
		}
		soon(until)
	} else {
		p.carried = nil
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Name < out[j].Name
	})
	boundFailures(out)
	return out, next
}

// maxScheduleMessage bounds a failing schedule's message in a report (16 of them per plugin at most).
const maxScheduleMessage = 256

// ScheduleFailureHold is the least time a failing Node schedule stays listed as it was first reported:
// a schedule whose runs alternate between failing and succeeding, or between return codes, changes the
// host's report (and the plugin's status, and its Events) at most once per hold, not at each run.
const ScheduleFailureHold = 5 * time.Minute

// FailingSchedules lists the Node schedules whose last run failed, from the Runner's statuses, sorted by
// name, at now. A schedule that was failing already (in prev) keeps its since, and its message while its
// return code stays the same: a schedule failing at each tick with a changing text (a time, a counter)
// changes the report once, not at each run. For ScheduleFailureHold after since, a listed schedule stays
// listed unchanged whatever its runs do.
func FailingSchedules(statuses []wasmv1.ScheduleStatus, prev []wasmv1.HostScheduleFailure, now time.Time) []wasmv1.HostScheduleFailure {
	var out []wasmv1.HostScheduleFailure
	for _, st := range statuses {
		var old *wasmv1.HostScheduleFailure
		for i := range prev {
			if prev[i].Name == st.Name {
				old = &prev[i]
			}
		}
		held := old != nil && old.Since != nil && now.Sub(old.Since.Time) < ScheduleFailureHold
		res := st.LastResult
		switch {
		case held:
			out = append(out, *old)
		case res == nil || (res.ReturnCode == 0 && res.Message == ""):
			// succeeded last: not listed
		case old != nil:
			f := *old
			if f.ReturnCode != res.ReturnCode {
				f.ReturnCode, f.Message = res.ReturnCode, truncate(res.Message, maxScheduleMessage)
			}
			out = append(out, f)
		default:
			out = append(out, wasmv1.HostScheduleFailure{Name: st.Name, ReturnCode: res.ReturnCode,
				Message: truncate(res.Message, maxScheduleMessage), Since: st.LastScheduleTime})
		}
		if len(out) == 16 {
			break
		}
	}
	return out
}

// Bounds of the failing schedules in one host's report, whatever the plugins placed on the node do: a
// namespace may hold many plugins, each with 16 failing schedules.
const (
	maxReportFailures        = 256
	maxReportFailureMessages = 32 << 10
)

// boundFailures keeps the report's failing schedules within maxReportFailures entries and
// maxReportFailureMessages bytes of messages: past those, entries lose their message, then are left out
// (the schedules' metrics on the host still count every failure).
func boundFailures(entries []wasmv1.HostPlugin) {
	n, bytes := 0, 0
	for i := range entries {
		fs := entries[i].FailingSchedules
		if len(fs) == 0 {
			continue
		}
		keep := fs[:0:0]
		for _, f := range fs {
			if n == maxReportFailures {
				break
			}
			n++
			if bytes += len(f.Message); bytes > maxReportFailureMessages {
				f.Message = ""
			}
			keep = append(keep, f)
		}
		entries[i].FailingSchedules = keep
	}
}

// truncate makes s valid UTF-8 without control characters (a plugin's text, which the API server would
// store escaped, six bytes each) and cuts it to at most n bytes on a character boundary. The text written
// is then the text read back, so a report compares equal to what the host published.
func truncate(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(s, "?"))
	if len(s) <= n {
		return s
	}
	cut := n - 3
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

// write applies the report when it differs from what the object holds. A report last written by another
// identity is overwritten only while the Lease says this host holds it: a host that a newer one replaced
// never writes over the newer one's report.
func (p *reporter) write(ctx context.Context, entries []wasmv1.HostPlugin) (bool, error) {
	r := p.r
	if p.obj == nil {
		var obj wasmv1.WasmHost
		err := r.APIReader.Get(ctx, types.NamespacedName{Name: r.Node}, &obj)
		switch {
		case apierrors.IsNotFound(err):
			return true, p.create(ctx, entries)
		case err != nil:
			return false, err
		}
		p.obj = &obj
	}
	st := reportStatus(r, entries)
	if equalStatus(p.obj.Status, st) {
		p.published = entryMap(entries)
		return false, nil
	}
	if h := p.obj.Status.Holder; h != "" && h != r.Identity {
		holder, err := p.leaseHolder(ctx)
		if err != nil {
			return false, err
		}
		if holder != r.Identity {
			r.lease.held.Store(false)
			return false, nil
		}
	}
	obj := p.obj.DeepCopy()
	obj.Status = st
	if err := r.Update(ctx, obj, client.FieldOwner(hostcontract.FieldManager)); err != nil {
		return false, fmt.Errorf("update wasmhost %s: %w", r.Node, err)
	}
	p.obj, p.published = obj, entryMap(entries)
	return true, nil
}

func (p *reporter) create(ctx context.Context, entries []wasmv1.HostPlugin) error {
	r := p.r
	obj := &wasmv1.WasmHost{ObjectMeta: metav1.ObjectMeta{Name: r.Node}, Spec: wasmv1.WasmHostSpec{NodeName: r.Node},
		Status: reportStatus(r, entries)}
	// Owned by its Node, when there is one: the garbage collector removes the report of a deleted node.
	var node corev1.Node
	if err := r.Get(ctx, types.NamespacedName{Name: r.Node}, &node); err == nil {
		obj.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID}}
	}
	if err := r.Create(ctx, obj, client.FieldOwner(hostcontract.FieldManager)); err != nil {
		return fmt.Errorf("create wasmhost %s: %w", r.Node, err)
	}
	p.obj, p.published = obj, entryMap(entries)
	return nil
}

func (p *reporter) leaseHolder(ctx context.Context) (string, error) {
	l := &coordinationv1.Lease{}
	if err := p.r.APIReader.Get(ctx, types.NamespacedName{Namespace: p.r.Namespace, Name: hostcontract.LeaseName(p.r.Node)}, l); err != nil {
		return "", fmt.Errorf("read the host lease: %w", err)
	}
	return ptr.Deref(l.Spec.HolderIdentity, ""), nil
}

func reportStatus(r *Reconciler, entries []wasmv1.HostPlugin) wasmv1.WasmHostStatus {
	st := wasmv1.WasmHostStatus{Holder: r.Identity, Endpoint: r.Endpoint, Plugins: entries, PluginCount: int32(len(entries))}
	for _, e := range entries {
		switch e.Phase {
		case wasmv1.NodePhaseReady:
			st.ReadyCount++
		case wasmv1.NodePhaseFailed:
			st.FailedCount++
		}
	}
	return st
}

func equalStatus(a, b wasmv1.WasmHostStatus) bool {
	if a.Holder != b.Holder || a.Endpoint != b.Endpoint || a.PluginCount != b.PluginCount ||
		a.ReadyCount != b.ReadyCount || a.FailedCount != b.FailedCount || len(a.Plugins) != len(b.Plugins) {
		return false
	}
	for i := range a.Plugins {
		x, y := a.Plugins[i], b.Plugins[i]
		if !hostcontract.SameEntry(x, y) || !x.Since.Equal(y.Since) {
			return false
		}
	}
	return true
}

// clear empties the report as the host leaves: what it served is no longer served here.
func (p *reporter) clear(ctx context.Context) error {
	r := p.r
	var obj wasmv1.WasmHost
	if err := r.APIReader.Get(ctx, types.NamespacedName{Name: r.Node}, &obj); err != nil {
		return client.IgnoreNotFound(err)
	}
	if obj.Status.Holder != r.Identity {
		return nil
	}
	obj.Status = wasmv1.WasmHostStatus{}
	return r.Update(ctx, &obj, client.FieldOwner(hostcontract.FieldManager))
}
