package chart

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// TestRolloutKeepsServing checks what lets `helm upgrade` and a host restart lose no call: the new host
// starts before the old one stops (maxSurge 10%, at least one, maxUnavailable 0) and is Ready for host.minReadySeconds first, readiness is probed every second from the
// start, the host drains for host.drainDelay at SIGTERM, and the grace period covers the drain and the
// calls in flight.
func TestRolloutKeepsServing(t *testing.T) {
	for _, tc := range []struct {
		flags       []string
		drain       string
		gracePeriod string
	}{
		{nil, "--drain-delay=5s", "35"},
		{[]string{"--set", "host.drainDelay=1m30s"}, "--drain-delay=1m30s", "120"},
		{[]string{"--set", "host.drainDelay=1500ms"}, "--drain-delay=1500ms", "32"},
	} {
		t.Run(strings.Join(tc.flags, " "), func(t *testing.T) {
			objs, err := Render(release, ns, tc.flags...)
			if err != nil {
				t.Fatal(err)
			}
			ds := find(t, objs, "DaemonSet", "-host")
			if got := str(ds, "spec", "updateStrategy"); got != "map[rollingUpdate:map[maxSurge:10% maxUnavailable:0] type:RollingUpdate]" {
				t.Errorf("host updateStrategy = %s, want a surge of 10%% and none unavailable", got)
			}
			if got := str(ds, "spec", "minReadySeconds"); got != "5" {
				t.Errorf("host minReadySeconds = %s, want 5", got)
			}
			c := &unstructured.Unstructured{Object: container(t, ds)}
			if got := str(c, "readinessProbe"); got != "map[failureThreshold:2 httpGet:map[path:/readyz port:http scheme:HTTPS] periodSeconds:1 timeoutSeconds:1]" {
				t.Errorf("host readinessProbe = %s, want /readyz every second from the start", got)
			}
			if !slices.Contains(args(t, ds), tc.drain) {
				t.Errorf("host args %v lack %s", args(t, ds), tc.drain)
			}
			if got := str(ds, "spec", "template", "spec", "terminationGracePeriodSeconds"); got != tc.gracePeriod {
				t.Errorf("host terminationGracePeriodSeconds = %s, want %s", got, tc.gracePeriod)
			}
		})
	}
}

// TestCacheOwnerInit: both pods give the cache volume to their user before they start, since fsGroup is
// ignored by hostPath, local and many NFS volumes; the init container may chown and nothing else.
func TestCacheOwnerInit(t *testing.T) {
	objs, err := Render(release, ns)
	if err != nil {
		t.Fatal(err)
	}
	// The controller owns the shared cache; a host mounts that one read-only and owns only its node-local
	// compile cache.
	for _, tc := range []struct {
		w            *unstructured.Unstructured
		volume, path string
	}{
		{find(t, objs, "Deployment", "-controller"), "cache", "/var/cache/wasm-operator"},
		{find(t, objs, "DaemonSet", "-host"), "compile-cache", "/var/cache/wasm-operator-local"},
	} {
		w := tc.w
		inits, _, _ := unstructured.NestedSlice(w.Object, "spec", "template", "spec", "initContainers")
		if len(inits) != 1 {
			t.Fatalf("%s: %d init containers, want the cache owner", w.GetKind(), len(inits))
		}
		ic := &unstructured.Unstructured{Object: inits[0].(map[string]any)}
		if got := str(ic, "args"); got != "[init-cache --cache-dir="+tc.path+" --uid=65532 --gid=65532]" {
			t.Errorf("%s init args = %s", w.GetKind(), got)
		}
		if got := str(ic, "image"); got != str(&unstructured.Unstructured{Object: container(t, w)}, "image") {
			t.Errorf("%s init image %s, want the manager image", w.GetKind(), got)
		}
		for path, want := range map[string]string{
			"securityContext.runAsUser": "0", "securityContext.capabilities.drop": "[ALL]",
			"securityContext.capabilities.add": "[CHOWN FOWNER]", "securityContext.allowPrivilegeEscalation": "false",
			"securityContext.readOnlyRootFilesystem": "true", "volumeMounts": "[map[mountPath:" + tc.path + " name:" + tc.volume + "]]",
		} {
			if got := str(ic, strings.Split(path, ".")...); got != want {
				t.Errorf("%s init %s = %s, want %s", w.GetKind(), path, got, want)
			}
		}
		if got := str(w, "spec", "template", "spec", "securityContext", "runAsUser"); got != "65532" {
			t.Errorf("%s pod runAsUser = %s: the init container gives the folder to 65532", w.GetKind(), got)
		}
	}
	objs, err = Render(release, ns, "--set", "cache.setOwner=false")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if _, ok, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "initContainers"); ok {
			t.Errorf("%s %s has init containers with cache.setOwner false", o.GetKind(), o.GetName())
		}
	}
}

// TestSchemaRefusesUnknownKeys walks values.schema.json: every object refuses keys it does not list, except
// where it holds a Kubernetes structure the API server validates (said in its description) or Helm's
// global values.
func TestSchemaRefusesUnknownKeys(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(Dir(), "values.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	var schema map[string]any
	if err := json.Unmarshal(b, &schema); err != nil {
		t.Fatal(err)
	}
	var walk func(path string, s map[string]any)
	walk = func(path string, s map[string]any) {
		if s["type"] == "object" {
			switch ap := s["additionalProperties"].(type) {
			case nil:
				t.Errorf("%s: an object without additionalProperties accepts any key", path)
			case bool:
				desc, _ := s["description"].(string)
				if ap && !strings.Contains(desc, "validated by the API server") && path != "/global" {
					t.Errorf("%s: additionalProperties true without a reason", path)
				}
			}
		}
		for _, key := range []string{"properties"} {
			if props, ok := s[key].(map[string]any); ok {
				for k, v := range props {
					walk(path+"/"+k, v.(map[string]any))
				}
			}
		}
		if items, ok := s["items"].(map[string]any); ok {
			walk(path+"/*", items)
		}
		if ap, ok := s["additionalProperties"].(map[string]any); ok {
			walk(path+"/*", ap)
		}
		for _, key := range []string{"anyOf", "oneOf", "allOf"} {
			if alts, ok := s[key].([]any); ok {
				for i, a := range alts {
					walk(fmt.Sprintf("%s(%s %d)", path, key, i), a.(map[string]any))
				}
			}
		}
	}
	walk("", schema)
}
