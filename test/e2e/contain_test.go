package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"k8s.io/client-go/kubernetes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	wasmv1 "github.com/wasm-operator/wasm-operator/api/v1alpha1"
	"github.com/wasm-operator/wasm-operator/internal/devstack"
	wb "github.com/wasm-operator/wasm-operator/internal/wasmbuild"
)

// TestHostileBesideGood: plugins whose start section never returns, placed beside a good one on a real
// `manager host`, are Failed with a message naming the limit while the good one keeps answering; a host
// killed while it loads a version refuses that version after its restart ("crashed the host") and serves
// the good plugin again within 10 s.
func TestHostileBesideGood(t *testing.T) {
	ctx := context.Background()
	s, dir := startStack(t, "controller", "host-node-a")
	if _, err := s.StartController(); err != nil {
		t.Fatal(err)
	}
	if err := s.AddNode(ctx, "node-a", nil); err != nil {
		t.Fatal(err)
	}
	addr, err := devstack.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	host, err := s.StartHost("node-a", addr, "--lease-duration=4s")
	if err != nil {
		t.Fatal(err)
	}

	startLoop := (&wb.Module{Types: []wb.FuncType{{}, {Results: []byte{wb.I32}}},
		Funcs:   []wb.Func{{Body: wb.Loop()}, {Type: 1, Body: wb.Body(wb.I32Const(0))}},
		Exports: []wb.Export{{Name: "run", Kind: wb.ExportFunc, Index: 1}}, Start: wb.Index(0)}).Bytes()
	srv := newFileServer(t, map[string][]byte{"/greet.wasm": readPlugin(t, s, "greet"), "/start-loop.wasm": startLoop})
	create := func(name, path string, timeout time.Duration) {
		t.Helper()
		p := &wasmv1.WasmPlugin{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
			Spec: wasmv1.WasmPluginSpec{Source: wasmv1.Source{HTTP: &wasmv1.HTTPSource{URL: srv.URL + path}},
				Limits: &wasmv1.Limits{CallTimeout: &metav1.Duration{Duration: timeout}}}}
		if err := s.Client.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	create("greet", "/greet.wasm", 5*time.Second)
	waitPlugin(t, s, "greet", "Ready", func(p *wasmv1.WasmPlugin) bool { return isReady(p) && p.Status.ReadyNodes == 1 })
	token := serviceAccountToken(t, s, kubernetes.NewForConfigOrDie(s.Config), "greet-caller", true)
	answers := func() (bool, string) {
		code, body := call(t, addr, "greet", "greet", token, "world")
		return code == 200 && body == "Hello, world!", fmt.Sprintf("greet: %d %s", code, body)
	}

	// Four at once: as many as the host reconciles in parallel.
	for i := range 4 {
		create(fmt.Sprintf("start-loop-%d", i), "/start-loop.wasm", time.Second)
	}
	for i := range 4 {
		if ok, msg := answers(); !ok {
			t.Fatalf("while hostile plugins load: %s", msg)
		}
		waitPlugin(t, s, fmt.Sprintf("start-loop-%d", i), "Failed on node-a naming the limit", func(p *wasmv1.WasmPlugin) bool {
			return len(p.Status.NotReadyNodes) == 1 && p.Status.NotReadyNodes[0].Phase == string(wasmv1.NodePhaseFailed) &&
				strings.Contains(p.Status.NotReadyNodes[0].Message, "the start function did not finish within 1s (limits.callTimeout)")
		})
	}
	if ok, msg := answers(); !ok {
		t.Fatalf("after hostile plugins failed: %s", msg)
	}

	// A load that takes the host down: killed while the start section runs under a 5-minute timeout.
	create("stuck", "/start-loop.wasm", 5*time.Minute)
	// The host's record of that load (internal/crashguard names it after the plugin); the failed plugins'
	// retries write records of their own meanwhile.
	sum := sha256.Sum256([]byte("default/stuck"))
	record := filepath.Join(dir, "state-node-a", hex.EncodeToString(sum[:16])+".json")
	// One crash during a load makes it a suspect (a call or another load may have caused it); suspects
	// load again one at a time, and one still loading at the next crash is refused: the stuck plugin takes
	// the host down a second time while it loads as the one suspect.
	loading := func(suspect bool) func() (bool, string) {
		return func() (bool, string) {
			b, err := os.ReadFile(record)
			var r struct {
				State   string `json:"state"`
				Suspect bool   `json:"suspect"`
			}
			_ = json.Unmarshal(b, &r)
			return err == nil && r.State == "loading" && r.Suspect == suspect, fmt.Sprintf("load record %s: %s %v", record, b, err)
		}
	}
	for _, suspect := range []bool{false, true} {
		eventually(t, wait, loading(suspect))
		host.Kill()
		restart := time.Now()
		if host, err = s.StartHost("node-a", addr, "--lease-duration=4s"); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, answers)
		t.Logf("greet answered %v after the host's restart", time.Since(restart).Round(10*time.Millisecond))
	}
	waitPlugin(t, s, "stuck", "Failed: crashed the host", func(p *wasmv1.WasmPlugin) bool {
		return len(p.Status.NotReadyNodes) == 1 && p.Status.NotReadyNodes[0].Phase == string(wasmv1.NodePhaseFailed) &&
			strings.Contains(p.Status.NotReadyNodes[0].Message, "crashed the host while it loaded it")
	})
	if exited, err := host.Exited(); exited {
		t.Fatalf("host exited: %v", err)
	}
}
