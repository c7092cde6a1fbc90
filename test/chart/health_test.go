package chart

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	lua "github.com/yuin/gopher-lua"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"

	wasmv1 "github.com/wasm-operator/wasm-operator/api/v1alpha1"
)

// argoHealth runs an Argo CD health script against obj the way Argo CD does: obj is a global table, the
// script returns a table with status and message.
func argoHealth(t *testing.T, script string, obj any) (status, message string) {
	t.Helper()
	data, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	L := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer L.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{{lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable}, {lua.StringLibName, lua.OpenString}, {lua.MathLibName, lua.OpenMath}} {
		L.Push(L.NewFunction(lib.open))
		L.Push(lua.LString(lib.name))
		L.Call(1, 0)
	}
	L.SetGlobal("obj", toLua(L, m))
	if err := L.DoString(script); err != nil {
		t.Fatalf("run the health script: %v", err)
	}
	hs, ok := L.Get(-1).(*lua.LTable)
	if !ok {
		t.Fatalf("the health script returned %v, want a table", L.Get(-1))
	}
	return lua.LVAsString(hs.RawGetString("status")), lua.LVAsString(hs.RawGetString("message"))
}

// toLua converts decoded JSON to Lua values as Argo CD does: objects and arrays become tables, numbers
// numbers.
func toLua(L *lua.LState, v any) lua.LValue {
	switch v := v.(type) {
	case map[string]any:
		t := L.NewTable()
		for k, e := range v {
			t.RawSetString(k, toLua(L, e))
		}
		return t
	case []any:
		t := L.NewTable()
		for _, e := range v {
			t.Append(toLua(L, e))
		}
		return t
	case string:
		return lua.LString(v)
	case float64:
		return lua.LNumber(v)
	case bool:
		return lua.LBool(v)
	default:
		return lua.LNil
	}
}

func cond(typ string, status metav1.ConditionStatus, reason, msg string) metav1.Condition {
	return metav1.Condition{Type: typ, Status: status, Reason: reason, Message: msg, ObservedGeneration: 3}
}

// plugin is a WasmPlugin at generation 3 whose status the controller wrote for observed.
func plugin(observed int64, suspend bool, conds ...metav1.Condition) *wasmv1.WasmPlugin {
	p := &wasmv1.WasmPlugin{
		TypeMeta:   metav1.TypeMeta{APIVersion: "wasm-operator.dev/v1alpha1", Kind: "WasmPlugin"},
		ObjectMeta: metav1.ObjectMeta{Name: "greet", Namespace: "default", Generation: 3},
	}
	p.Spec.Suspend = suspend
	p.Status.ObservedGeneration = observed
	p.Status.Conditions = conds
	return p
}

func healthScript(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(Dir(), "health", "argocd.lua"))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// kstatusOf is the kstatus result that matches each Argo CD health.
var kstatusOf = map[string]status.Status{
	"Healthy": status.CurrentStatus, "Progressing": status.InProgressStatus, "Degraded": status.FailedStatus,
}

// kstatusCurrent names the cases of a plugin the controller has not written a status for yet: kstatus reads
// it as Current, so Flux needs the healthCheckExprs of docs/install.md to wait for it.
var kstatusCurrent = map[string]bool{"no status yet": true, "no metadata.generation": true}

func TestArgoCDHealth(t *testing.T) {
	const (
		T = metav1.ConditionTrue
		F = metav1.ConditionFalse
	)
	script := healthScript(t)
	for _, tc := range []struct {
		name        string
		obj         any
		status, msg string
	}{
		{"ready everywhere", plugin(3, false, cond(wasmv1.ConditionReady, T, wasmv1.ReasonSucceeded, "3/3 nodes serve sha256:0a1b2c3d4e5f")),
			"Healthy", "3/3 nodes serve"},
		{"ready, fetch failing but last good module serving", plugin(3, false,
			cond(wasmv1.ConditionReady, T, wasmv1.ReasonSucceeded, "3/3 nodes serve sha256:0a1b2c3d4e5f"),
			cond(wasmv1.ConditionFetchFailed, T, wasmv1.ReasonFetchFailed, "registry answered 503")),
			"Healthy", "3/3 nodes serve"},
		{"hosts loading", plugin(3, false,
			cond(wasmv1.ConditionReconciling, T, wasmv1.ReasonWaitingForNodes, "1/3 nodes serve sha256:0a1b2c3d4e5f"),
			cond(wasmv1.ConditionReady, F, wasmv1.ReasonWaitingForNodes, "1/3 nodes serve sha256:0a1b2c3d4e5f")),
			"Progressing", "WaitingForNodes: 1/3 nodes"},
		{"first fetch", plugin(0, false,
			cond(wasmv1.ConditionReconciling, T, wasmv1.ReasonProgressing, "fetching and validating the module"),
			cond(wasmv1.ConditionReady, F, wasmv1.ReasonProgressing, "fetching and validating the module")),
			"Progressing", "generation 3"},
		{"digest mismatch", plugin(3, false,
			cond(wasmv1.ConditionStalled, T, wasmv1.ReasonDigestMismatch, "content is sha256:ff, spec.sha256 pins sha256:aa"),
			cond(wasmv1.ConditionReady, F, wasmv1.ReasonDigestMismatch, "content is sha256:ff, spec.sha256 pins sha256:aa")),
			"Degraded", "DigestMismatch: content is sha256:ff"},
		{"permission not granted", plugin(3, false,
			cond(wasmv1.ConditionStalled, T, wasmv1.ReasonPermissionDenied, "imports extism:host/env.http_request; grant spec.permissions.http"),
			cond(wasmv1.ConditionReady, F, wasmv1.ReasonPermissionDenied, "imports extism:host/env.http_request; grant spec.permissions.http")),
			"Degraded", "PermissionDenied: imports"},
		{"suspended before valid", plugin(3, true,
			cond(wasmv1.ConditionReady, F, wasmv1.ReasonSuspended, "spec.suspend is true: the current spec is not applied")),
			"Suspended", "spec.suspend is true"},
		{"suspended while serving", plugin(3, true,
			cond(wasmv1.ConditionReady, T, wasmv1.ReasonSucceeded, "2/2 nodes serve sha256:0a1b2c3d4e5f (suspended: not refreshed)")),
			"Suspended", "not refreshed"},
		{"no status yet", plugin(0, false), "Progressing", "generation 3"},
		{"new generation not handled yet", plugin(2, false,
			cond(wasmv1.ConditionReady, T, wasmv1.ReasonSucceeded, "3/3 nodes serve sha256:0a1b2c3d4e5f")),
			"Progressing", "generation 3"},
		{"no metadata.generation", map[string]any{"apiVersion": "wasm-operator.dev/v1alpha1", "kind": "WasmPlugin",
			"metadata": map[string]any{"name": "x"}}, "Progressing", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			health, msg := argoHealth(t, script, tc.obj)
			if health != tc.status || !strings.Contains(msg, tc.msg) {
				t.Errorf("health = %s %q, want %s with %q", health, msg, tc.status, tc.msg)
			}
			// Flux reads the same status with kstatus; both must agree (kstatus has no suspended state).
			if health == "Suspended" {
				return
			}
			data, _ := json.Marshal(tc.obj)
			u := &unstructured.Unstructured{}
			if err := u.UnmarshalJSON(data); err != nil {
				t.Fatal(err)
			}
			res, err := status.Compute(u)
			if err != nil {
				t.Fatal(err)
			}
			want := kstatusOf[health]
			if kstatusCurrent[tc.name] {
				want = status.CurrentStatus
			}
			if res.Status != want {
				t.Errorf("kstatus = %s (%s), Argo CD health %s; want %s", res.Status, res.Message, health, want)
			}
		})
	}
}
