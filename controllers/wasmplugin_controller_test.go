package controllers

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	wasmv1 "github.com/wasm-operator/wasm-operator/api/v1alpha1"
	"github.com/wasm-operator/wasm-operator/internal/hostcontract"
	"github.com/wasm-operator/wasm-operator/internal/source"
	"github.com/wasm-operator/wasm-operator/internal/store"
	"github.com/wasm-operator/wasm-operator/internal/testplugins"
)

const wait = 30 * time.Second

func module(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(testplugins.Build(t, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// moduleServer serves files by path and counts the requests for each.
type moduleServer struct {
	*httptest.Server
	files    map[string][]byte
	requests map[string]*atomic.Int64
	fail     map[string]*atomic.Int64 // path -> number of 500 answers still to give
}

func newModuleServer(t testing.TB, files map[string][]byte) *moduleServer {
	s := &moduleServer{files: files, requests: map[string]*atomic.Int64{}, fail: map[string]*atomic.Int64{}}
	for p := range files {
		s.requests[p] = &atomic.Int64{}
		s.fail[p] = &atomic.Int64{}
	}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, ok := s.files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		s.requests[r.URL.Path].Add(1)
		if s.fail[r.URL.Path].Add(-1) >= 0 {
			http.Error(w, "try later", http.StatusInternalServerError)
			return
		}
		_, _ = w.Write(b)
	}))
	t.Cleanup(s.Close)
	return s
}

func newPlugin(t *testing.T, name string, spec wasmv1.WasmPluginSpec) *wasmv1.WasmPlugin {
	t.Helper()
	p := &wasmv1.WasmPlugin{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}, Spec: spec}
	if err := k8s.Create(context.Background(), p); err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), p) })
	return p
}

func httpSpec(url string) wasmv1.WasmPluginSpec {
	return wasmv1.WasmPluginSpec{Source: wasmv1.Source{HTTP: &wasmv1.HTTPSource{URL: url}}}
}

func get(t *testing.T, name string) *wasmv1.WasmPlugin {
	t.Helper()
	var p wasmv1.WasmPlugin
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: "default", Name: name}, &p); err != nil {
		t.Fatalf("get %s: %v", name, err)
	}
	return &p
}

// waitFor waits until the plugin's Ready condition has the reason given and its generation is observed
// when observed is true, and returns the plugin.
func waitFor(t *testing.T, name, reason string) *wasmv1.WasmPlugin {
	t.Helper()
	var p *wasmv1.WasmPlugin
	eventually(t, wait, func() (bool, string) {
		p = get(t, name)
		c := meta.FindStatusCondition(p.Status.Conditions, wasmv1.ConditionReady)
		if c == nil {
			return false, "no Ready condition"
		}
		return c.Reason == reason && c.ObservedGeneration == p.Generation,
			fmt.Sprintf("Ready=%s reason %s (want %s): %s", c.Status, c.Reason, reason, c.Message)
	})
	return p
}

func readyMessage(p *wasmv1.WasmPlugin) string {
	return meta.FindStatusCondition(p.Status.Conditions, wasmv1.ConditionReady).Message
}

func kstatus(t *testing.T, p *wasmv1.WasmPlugin) status.Status {
	t.Helper()
	m, err := k8sruntime.DefaultUnstructuredConverter.ToUnstructured(p)
	if err != nil {
		t.Fatal(err)
	}
	res, err := status.Compute(&unstructured.Unstructured{Object: m})
	if err != nil {
		t.Fatal(err)
	}
	return res.Status
}

// TestSources brings a plugin from each source type to a stored, validated artifact.
func TestSources(t *testing.T) {
	greet := module(t, "greet")
	srv := newModuleServer(t, map[string][]byte{"/greet.wasm": greet})

	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(reg.Close)
	image := strings.TrimPrefix(reg.URL, "http://") + "/plugins/greet:v1"
	ref, err := name.ParseReference(image)
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, static.NewLayer(greet, types.MediaType(source.MediaTypeWasmLayer)))
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	imgDigest, _ := img.Digest()

	// A ConfigMap holds at most 1 MiB: a small module from the Extism SDK's corpus.
	hello, err := os.ReadFile(testplugins.SDKWasm(t, "hello.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "hello-module", Namespace: "default"},
		BinaryData: map[string][]byte{"plugin.wasm": hello}}
	if err := k8s.Create(context.Background(), cm); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), cm) })

	tests := []struct {
		name       string
		spec       wasmv1.WasmPluginSpec
		module     []byte
		export     string
		wantSource string
	}{
		{"from-http", httpSpec(srv.URL + "/greet.wasm"), greet, "greet", srv.URL + "/greet.wasm"},
		{"from-oci", wasmv1.WasmPluginSpec{Source: wasmv1.Source{OCI: &wasmv1.OCISource{Image: image, Insecure: true}}},
			greet, "greet", "@" + imgDigest.String()},
		{"from-configmap", wasmv1.WasmPluginSpec{Source: wasmv1.Source{ConfigMap: &wasmv1.ConfigMapSource{Name: "hello-module", Key: "plugin.wasm"}}},
			hello, "run_test", "default/hello-module"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := tt.spec
			if tt.spec.Source.OCI == nil { // unpinned, the tag is resolved to the image's digest
				spec.SHA256 = strings.TrimPrefix(digestOf(tt.module), "sha256:")
			}
			newPlugin(t, tt.name, spec)
			p := waitFor(t, tt.name, wasmv1.ReasonNoHosts)
			a := p.Status.Artifact
			if a.Digest != digestOf(tt.module) || a.Size != int64(len(tt.module)) || !strings.Contains(a.Source, tt.wantSource) {
				t.Fatalf("artifact = %+v, want digest %s, size %d, source with %q", a, digestOf(tt.module), len(tt.module), tt.wantSource)
			}
			if a.Path != "modules/sha256/"+strings.TrimPrefix(a.Digest, "sha256:")+".wasm" || a.ShortDigest != hostcontract.ShortDigest(a.Digest) {
				t.Fatalf("artifact path/short digest = %q/%q", a.Path, a.ShortDigest)
			}
			if stored, err := reconciler.Store.Get(a.Digest); err != nil || !bytes.Equal(stored, tt.module) {
				t.Fatalf("module not in the store: %v", err)
			}
			if m := p.Status.Module; m == nil || !contains(m.Exports, tt.export) || m.ABI != "extism" {
				t.Fatalf("module info = %+v, want export %s, abi extism", m, tt.export)
			}
			// Valid, but no host runs: not Ready, and kstatus waits (Reconciling), as kubectl wait and Flux do.
			if s := kstatus(t, p); s != status.InProgressStatus {
				t.Fatalf("kstatus = %s with no live host, want InProgress", s)
			}
			if len(p.Finalizers) != 0 {
				t.Fatalf("finalizers %v: the controller sets none", p.Finalizers)
			}
		})
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// TestStalls covers the failures only the user can fix: each is Stalled with a reason that says what to do,
// which kstatus reads as Failed.
func TestStalls(t *testing.T) {
	greet, fetch := module(t, "greet"), module(t, "http-fetch")
	big := append([]byte("\x00asm\x01\x00\x00\x00"), make([]byte, testMaxMod)...)
	srv := newModuleServer(t, map[string][]byte{
		"/greet.wasm": greet, "/fetch.wasm": fetch, "/big.wasm": big, "/page.html": []byte("<html>hello</html>"),
	})
	wrongPin := strings.Repeat("0", 64)
	tests := []struct {
		name, url, pin string
		wantReason     string
		wantMsg        string
		schedules      []wasmv1.Schedule
	}{
		{"pin-mismatch", "/greet.wasm", wrongPin, wasmv1.ReasonDigestMismatch, "sha256:" + wrongPin, nil},
		{"not-found", "/missing.wasm", "", wasmv1.ReasonSourceNotFound, "404", nil},
		{"too-large", "/big.wasm", "", wasmv1.ReasonTooLarge, "larger than the 4194304 byte limit", nil},
		{"not-wasm", "/page.html", "", wasmv1.ReasonInvalidModule, "not a WebAssembly module", nil},
		{"ungranted-import", "/fetch.wasm", "", wasmv1.ReasonPermissionDenied, "extism:host/env.http_request needs permissions.http", nil},
		// What the API server cannot check of a schedule: a field out of range, a function not exported.
		{"schedule-out-of-range", "/greet.wasm", "", wasmv1.ReasonInvalidSchedule, "schedule warm: ",
			[]wasmv1.Schedule{{Name: "warm", Schedule: "61 * * * *", Function: "greet"}}},
		{"schedule-unknown-function", "/greet.wasm", "", wasmv1.ReasonInvalidSchedule, `schedule warm: the module exports no function "warmup"`,
			[]wasmv1.Schedule{{Name: "warm", Schedule: "@every 1m", Function: "warmup"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := httpSpec(srv.URL + tt.url)
			spec.SHA256 = tt.pin
			spec.Schedules = tt.schedules
			newPlugin(t, tt.name, spec)
			p := waitFor(t, tt.name, tt.wantReason)
			stalled := meta.FindStatusCondition(p.Status.Conditions, wasmv1.ConditionStalled)
			if stalled == nil || stalled.Status != metav1.ConditionTrue || stalled.Reason != tt.wantReason {
				t.Fatalf("Stalled = %+v, want True/%s", stalled, tt.wantReason)
			}
			if !strings.Contains(stalled.Message, tt.wantMsg) {
				t.Fatalf("Stalled message %q does not say %q", stalled.Message, tt.wantMsg)
			}
			if meta.FindStatusCondition(p.Status.Conditions, wasmv1.ConditionReconciling) != nil {
				t.Fatal("Reconciling present on a stalled plugin")
			}
			if p.Status.Artifact != nil {
				t.Fatalf("a refused module became the artifact: %+v", p.Status.Artifact)
			}
			if s := kstatus(t, p); s != status.FailedStatus {
				t.Fatalf("kstatus = %s, want Failed", s)
			}
		})
	}
}

// TestRetryThenReady: a server that fails twice then answers is retried, and the plugin becomes Ready.
func TestRetryThenReady(t *testing.T) {
	greet := module(t, "greet")
	srv := newModuleServer(t, map[string][]byte{"/flaky.wasm": greet})
	srv.fail["/flaky.wasm"].Store(2)
	newPlugin(t, "flaky", httpSpec(srv.URL+"/flaky.wasm"))
	p := waitFor(t, "flaky", wasmv1.ReasonNoHosts)
	if n := srv.requests["/flaky.wasm"].Load(); n != 3 {
		t.Fatalf("%d requests, want 3 (two 500s, then the module)", n)
	}
	if meta.FindStatusCondition(p.Status.Conditions, wasmv1.ConditionFetchFailed) != nil {
		t.Fatal("FetchFailed left on a ready plugin")
	}
}

// TestTransientFailure: a source that keeps failing leaves the plugin Reconciling with FetchFailed, which
// kstatus reads as InProgress, until it answers.
func TestTransientFailure(t *testing.T) {
	greet := module(t, "greet")
	srv := newModuleServer(t, map[string][]byte{"/down.wasm": greet})
	srv.fail["/down.wasm"].Store(1 << 30)
	newPlugin(t, "down", httpSpec(srv.URL+"/down.wasm"))
	var p *wasmv1.WasmPlugin
	eventually(t, wait, func() (bool, string) {
		p = get(t, "down")
		c := meta.FindStatusCondition(p.Status.Conditions, wasmv1.ConditionFetchFailed)
		return c != nil && c.Status == metav1.ConditionTrue, fmt.Sprintf("conditions %+v", p.Status.Conditions)
	})
	if s := kstatus(t, p); s != status.InProgressStatus {
		t.Fatalf("kstatus = %s, want InProgress", s)
	}
	if !strings.Contains(readyMessage(p), "500") {
		t.Fatalf("Ready message %q does not give the server's answer", readyMessage(p))
	}
	srv.fail["/down.wasm"].Store(0)
	p = waitFor(t, "down", wasmv1.ReasonNoHosts)
	if meta.FindStatusCondition(p.Status.Conditions, wasmv1.ConditionFetchFailed) != nil {
		t.Fatal("FetchFailed left after recovery")
	}
}

// TestUpdateKeepsLastGood: a broken new version leaves the old artifact in status; a good one replaces it.
func TestUpdateKeepsLastGood(t *testing.T) {
	greet, vowels := module(t, "greet"), module(t, "count-vowels")
	srv := newModuleServer(t, map[string][]byte{"/v1.wasm": greet, "/v2.wasm": vowels, "/broken.wasm": []byte("nope")})
	newPlugin(t, "update", httpSpec(srv.URL+"/v1.wasm"))
	p := waitFor(t, "update", wasmv1.ReasonNoHosts)
	first := p.Status.Artifact.Digest

	p.Spec.Source.HTTP.URL = srv.URL + "/broken.wasm"
	if err := k8s.Update(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	p = waitFor(t, "update", wasmv1.ReasonInvalidModule)
	if p.Status.Artifact == nil || p.Status.Artifact.Digest != first {
		t.Fatalf("artifact after a broken update = %+v, want the last good %s", p.Status.Artifact, first)
	}
	if !strings.Contains(readyMessage(p), "hosts keep serving "+hostcontract.ShortDigest(first)) {
		t.Fatalf("Ready message %q does not say the old module keeps serving", readyMessage(p))
	}

	p.Spec.Source.HTTP.URL = srv.URL + "/v2.wasm"
	if err := k8s.Update(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	p = waitFor(t, "update", wasmv1.ReasonNoHosts)
	if p.Status.Artifact.Digest != digestOf(vowels) || !contains(p.Status.Module.Exports, "count_vowels") {
		t.Fatalf("artifact = %+v, module = %+v; want count-vowels", p.Status.Artifact, p.Status.Module)
	}
}

// TestSuspendResume: a suspended plugin is not fetched; resuming fetches it.
func TestSuspendResume(t *testing.T) {
	greet := module(t, "greet")
	srv := newModuleServer(t, map[string][]byte{"/s.wasm": greet})
	spec := httpSpec(srv.URL + "/s.wasm")
	spec.Suspend = true
	newPlugin(t, "suspended", spec)
	p := waitFor(t, "suspended", wasmv1.ReasonSuspended)
	if n := srv.requests["/s.wasm"].Load(); n != 0 {
		t.Fatalf("a suspended plugin was fetched %d times", n)
	}
	p.Spec.Suspend = false
	if err := k8s.Update(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "suspended", wasmv1.ReasonNoHosts)
}

// TestSharedModuleFetchedOnce: 50 plugins of one URL cause one request.
func TestSharedModuleFetchedOnce(t *testing.T) {
	greet := module(t, "greet")
	srv := newModuleServer(t, map[string][]byte{"/shared.wasm": greet})
	for i := range 50 {
		newPlugin(t, fmt.Sprintf("shared-%d", i), httpSpec(srv.URL+"/shared.wasm"))
	}
	for i := range 50 {
		waitFor(t, fmt.Sprintf("shared-%d", i), wasmv1.ReasonNoHosts)
	}
	if n := srv.requests["/shared.wasm"].Load(); n != 1 {
		t.Fatalf("50 plugins sharing a module fetched it %d times, want 1", n)
	}
}

// TestDeletionAndGC: deleting a plugin removes it (finalizer released) and GC then removes its module.
func TestDeletionAndGC(t *testing.T) {
	wasm := module(t, "counter")
	srv := newModuleServer(t, map[string][]byte{"/c.wasm": wasm})
	spec := httpSpec(srv.URL + "/c.wasm")
	spec.Permissions = &wasmv1.Permissions{Vars: &wasmv1.VarsPermission{}}
	p := newPlugin(t, "doomed", spec)
	waitFor(t, "doomed", wasmv1.ReasonNoHosts)
	gc := &StoreGC{Reconciler: reconciler, Grace: time.Nanosecond}
	if res, err := gc.Collect(context.Background()); err != nil || containsEntry(res.Removed, digestOf(wasm)) {
		t.Fatalf("GC removed a referenced module or failed: %v %v", res.Removed, err)
	}
	if err := k8s.Delete(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	// No finalizer holds the deletion: the plugin is gone once the controller's cache, which GC lists, has
	// seen it go.
	eventually(t, wait, func() (bool, string) {
		err := reconciler.Get(context.Background(), client.ObjectKeyFromObject(p), &wasmv1.WasmPlugin{})
		return apierrors.IsNotFound(err), fmt.Sprintf("still there: %v", err)
	})
	res, err := gc.Collect(context.Background())
	if err != nil || !containsEntry(res.Removed, digestOf(wasm)) {
		t.Fatalf("GC after deletion removed %v (%v), want %s", res.Removed, err, digestOf(wasm))
	}
	if ok, _ := reconciler.Store.Has(digestOf(wasm)); ok {
		t.Fatal("module still stored after GC")
	}
}

func containsEntry(entries []store.Entry, digest string) bool {
	for _, e := range entries {
		if e.Digest == digest {
			return true
		}
	}
	return false
}

// TestNodes: host Leases and status entries decide targetNodes, readyNodes and Ready; a host whose Lease
// expires leaves the target set and its entry is removed.
func TestNodes(t *testing.T) {
	greet := module(t, "greet")
	srv := newModuleServer(t, map[string][]byte{"/n.wasm": greet})
	ctx := context.Background()
	for _, n := range []struct {
		name   string
		labels map[string]string
	}{{"node-a", map[string]string{"zone": "a"}}, {"node-b", map[string]string{"zone": "b"}}} {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.name, Labels: n.labels}}
		if err := k8s.Create(ctx, node); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = k8s.Delete(ctx, node) })
	}
	lease := func(node string, seconds int32) *coordinationv1.Lease {
		return &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: hostcontract.LeaseName(node), Namespace: hostNS, Labels: map[string]string{hostcontract.LeaseLabel: node}},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(node), LeaseDurationSeconds: ptr.To(seconds),
				RenewTime: &metav1.MicroTime{Time: time.Now()}},
		}
	}
	la, lb := lease("node-a", 300), lease("node-b", 3)
	for _, l := range []*coordinationv1.Lease{la, lb} {
		if err := k8s.Create(ctx, l); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = k8s.Delete(ctx, l) })
	}

	newPlugin(t, "placed", httpSpec(srv.URL+"/n.wasm"))
	p := waitFor(t, "placed", wasmv1.ReasonWaitingForNodes)
	if p.Status.TargetNodes != 2 || p.Status.ReadyNodes != 0 || kstatus(t, p) != status.InProgressStatus {
		t.Fatalf("nodes %d/%d, kstatus %s; want 0/2 InProgress", p.Status.ReadyNodes, p.Status.TargetNodes, kstatus(t, p))
	}

	// Each host reports the plugin in its own node's WasmHost.
	for _, node := range []string{"node-a", "node-b"} {
		report(t, node, wasmv1.HostPlugin{Namespace: p.Namespace, Name: p.Name, Generation: p.Generation,
			Digest: p.Status.Artifact.Digest, Phase: wasmv1.NodePhaseReady})
	}
	p = waitFor(t, "placed", wasmv1.ReasonSucceeded)
	if p.Status.NodeSummary != "2/2" || kstatus(t, p) != status.CurrentStatus {
		t.Fatalf("nodes %s, kstatus %s; want 2/2 Current", p.Status.NodeSummary, kstatus(t, p))
	}

	// node-b stops renewing: its Lease expires, it leaves the target set and the aggregate.
	eventually(t, wait, func() (bool, string) {
		p = get(t, "placed")
		return p.Status.TargetNodes == 1 && p.Status.UpdatedNodes == 1 && p.Status.NodeSummary == "1/1",
			fmt.Sprintf("target %d, updated %d", p.Status.TargetNodes, p.Status.UpdatedNodes)
	})
	if c := meta.FindStatusCondition(p.Status.Conditions, wasmv1.ConditionReady); c.Status != metav1.ConditionTrue {
		t.Fatalf("Ready = %+v after a host left; node-a still serves", c)
	}

	// Placement on zone b only: no live host matches.
	p.Spec.Placement = &wasmv1.Placement{NodeSelector: map[string]string{"zone": "b"}}
	if err := k8s.Update(ctx, p); err != nil {
		t.Fatal(err)
	}
	p = waitFor(t, "placed", wasmv1.ReasonNoHosts)
	want := "none of the 1 live node hosts runs on a node that spec.placement.nodeSelector selects"
	if p.Status.TargetNodes != 0 || !strings.Contains(readyMessage(p), want) {
		t.Fatalf("target %d, Ready message %q; want 0 and %q", p.Status.TargetNodes, readyMessage(p), want)
	}
}

// report writes node's WasmHost with entries, as that node's host does.
func report(t *testing.T, node string, entries ...wasmv1.HostPlugin) {
	t.Helper()
	ctx := context.Background()
	h := &wasmv1.WasmHost{ObjectMeta: metav1.ObjectMeta{Name: node}}
	_, err := controllerutil.CreateOrUpdate(ctx, k8s, h, func() error {
		h.Spec.NodeName = node
		h.Status = wasmv1.WasmHostStatus{Holder: node, Plugins: entries, PluginCount: int32(len(entries))}
		return nil
	})
	if err != nil {
		t.Fatalf("report %s: %v", node, err)
	}
	t.Cleanup(func() { _ = k8s.Delete(ctx, h) })
}

func TestParseHeaders(t *testing.T) {
	h, err := parseHeaders([]byte("X-Api-Key: abc\n\nAccept:  application/wasm \n"))
	if err != nil || h["X-Api-Key"] != "abc" || h["Accept"] != "application/wasm" || len(h) != 2 {
		t.Fatalf("parseHeaders = %v, %v", h, err)
	}
	if _, err := parseHeaders([]byte("no colon here")); err == nil || !strings.Contains(err.Error(), "no colon here") {
		t.Fatalf("bad line not named: %v", err)
	}
}

// TestReferencedObjectsChange: a changed ConfigMap brings its new module; a fixed Secret lets a refused
// fetch succeed, without touching the WasmPlugin.
func TestReferencedObjectsChange(t *testing.T) {
	ctx := context.Background()
	hello, err := os.ReadFile(testplugins.SDKWasm(t, "hello.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "changing", Namespace: "default"},
		BinaryData: map[string][]byte{"plugin.wasm": hello}}
	if err := k8s.Create(ctx, cm); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(ctx, cm) })
	newPlugin(t, "from-changing-cm", wasmv1.WasmPluginSpec{Source: wasmv1.Source{ConfigMap: &wasmv1.ConfigMapSource{Name: "changing", Key: "plugin.wasm"}}})
	waitFor(t, "from-changing-cm", wasmv1.ReasonNoHosts)
	v2 := testplugins.WithCustomSection(hello, "v", "2") // another digest, same code
	cm.BinaryData["plugin.wasm"] = v2
	if err := k8s.Update(ctx, cm); err != nil {
		t.Fatal(err)
	}
	eventually(t, wait, func() (bool, string) {
		p := get(t, "from-changing-cm")
		return p.Status.Artifact != nil && p.Status.Artifact.Digest == digestOf(v2), fmt.Sprintf("artifact %+v", p.Status.Artifact)
	})

	greet := module(t, "greet")
	var requests atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		if r.Header.Get("Authorization") != "Bearer right" {
			http.Error(w, "who are you", http.StatusUnauthorized)
			return
		}
		_, _ = w.Write(greet)
	}))
	t.Cleanup(srv.Close)
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "creds", Namespace: "default"},
		Data: map[string][]byte{"token": []byte("wrong")}}
	if err := k8s.Create(ctx, sec); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(ctx, sec) })
	spec := httpSpec(srv.URL + "/greet.wasm")
	spec.Source.HTTP.SecretRef = &wasmv1.LocalObjectReference{Name: "creds"}
	newPlugin(t, "with-secret", spec)
	p := waitFor(t, "with-secret", wasmv1.ReasonUnauthorized)
	if !strings.Contains(readyMessage(p), "401") {
		t.Fatalf("Ready message %q does not give the server's answer", readyMessage(p))
	}
	// Stalled waits for the user: reconciles for other reasons do not knock on the server again.
	before := requests.Load()
	for range 3 {
		if _, err := reconciler.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(p)}); err != nil {
			t.Fatal(err)
		}
	}
	if n := requests.Load(); n != before {
		t.Fatalf("a stalled source was fetched %d more times without a change", n-before)
	}
	sec.Data["token"] = []byte("right")
	if err := k8s.Update(ctx, sec); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "with-secret", wasmv1.ReasonNoHosts)
}

func TestFetchCache(t *testing.T) {
	var c fetchCache
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	fetches := 0
	fetch := func() (resolved, error) { fetches++; return resolved{Digest: fmt.Sprint("d", fetches)}, nil }
	steps := []struct {
		name        string
		at          time.Duration
		interval    time.Duration
		forget      bool
		wantDigest  string
		wantFetches int
		wantDue     time.Duration
	}{
		{"first fetch", 0, time.Minute, false, "d1", 1, time.Minute},
		{"within the interval: reused", 30 * time.Second, time.Minute, false, "d1", 1, 30 * time.Second},
		{"interval passed: fetched again", 61 * time.Second, time.Minute, false, "d2", 2, time.Minute},
		{"never refresh: reused forever", 48 * time.Hour, 0, false, "d2", 2, 0},
		{"forgotten (module gone from the cache): fetched again", 48 * time.Hour, 0, true, "d3", 3, 0},
	}
	for _, s := range steps {
		if s.forget {
			c.forget("k")
		}
		at := now.Add(s.at)
		res, err := c.do("k", at, s.interval, fetch)
		if err != nil || res.Digest != s.wantDigest || fetches != s.wantFetches {
			t.Fatalf("%s: got %s after %d fetches (%v), want %s after %d", s.name, res.Digest, fetches, err, s.wantDigest, s.wantFetches)
		}
		if due := c.dueIn("k", at, s.interval); due != s.wantDue {
			t.Fatalf("%s: due in %s, want %s", s.name, due, s.wantDue)
		}
	}
	// A failed fetch is not kept: the next reconcile tries again.
	_, err := c.do("bad", now, time.Minute, func() (resolved, error) { return resolved{}, fmt.Errorf("boom") })
	if err == nil {
		t.Fatal("error lost")
	}
	if res, err := c.do("bad", now, time.Minute, fetch); err != nil || res.Digest != "d4" {
		t.Fatalf("after a failure: %v %v, want a new fetch", res, err)
	}
}

func TestFetchCachePrune(t *testing.T) {
	var c fetchCache
	old, recent := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 1, 3, 0, 0, 0, 0, time.UTC)
	ok := func() (resolved, error) { return resolved{Digest: "d"}, nil }
	_, _ = c.do("old", old, 0, ok)
	_, _ = c.do("recent", recent, 0, ok)
	c.prune(old.Add(24 * time.Hour))
	if _, found := c.cached("old"); found {
		t.Error("an entry older than the cutoff was kept")
	}
	if _, found := c.cached("recent"); !found {
		t.Error("a recent entry was pruned")
	}
}

// TestHostReportsCorruptModule: hosts only read the shared cache. When one finds the stored module corrupt
// (here: overwritten behind the controller's back) it says so in its entry, and the controller checks the
// file, removes it and stores the module again, from its source.
func TestHostReportsCorruptModule(t *testing.T) {
	greet := module(t, "greet")
	srv := newModuleServer(t, map[string][]byte{"/c.wasm": greet})
	ctx := context.Background()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-corrupt"}}
	if err := k8s.Create(ctx, node); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(ctx, node) })
	l := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: hostcontract.LeaseName(node.Name), Namespace: hostNS, Labels: map[string]string{hostcontract.LeaseLabel: node.Name}},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(node.Name), LeaseDurationSeconds: ptr.To(int32(300)),
			RenewTime: &metav1.MicroTime{Time: time.Now()}},
	}
	if err := k8s.Create(ctx, l); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(ctx, l) })

	newPlugin(t, "corrupt", httpSpec(srv.URL+"/c.wasm"))
	p := waitFor(t, "corrupt", wasmv1.ReasonWaitingForNodes)
	path := filepath.Join(cacheDir, p.Status.Artifact.Path)
	bad := append([]byte(nil), greet...)
	bad[len(bad)/2] ^= 0xff
	if err := os.WriteFile(path, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	fetches := srv.requests["/c.wasm"].Load()
	msg := "load " + hostcontract.ShortDigest(p.Status.Artifact.Digest) + ": " + hostcontract.MessageCorruptModule + "; the controller stores it again"
	report(t, node.Name, wasmv1.HostPlugin{Namespace: p.Namespace, Name: p.Name, Generation: p.Generation,
		Phase: wasmv1.NodePhaseFailed, Message: msg})
	eventually(t, wait, func() (bool, string) {
		b, err := os.ReadFile(path)
		return err == nil && bytes.Equal(b, greet), fmt.Sprintf("stored file intact: %v (err %v)", bytes.Equal(b, greet), err)
	})
	if n := srv.requests["/c.wasm"].Load(); n <= fetches {
		t.Fatalf("the module was not fetched again (%d requests before, %d after)", fetches, n)
	}
}
