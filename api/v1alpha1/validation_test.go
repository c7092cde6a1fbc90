package v1alpha1_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	wasmv1 "github.com/wasm-operator/wasm-operator/api/v1alpha1"
	"github.com/wasm-operator/wasm-operator/internal/testenv"
)

var (
	k8s client.Client
	env *envtest.Environment
)

func TestMain(m *testing.M) {
	var cfg *rest.Config
	var err error
	env, cfg, err = testenv.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	scheme := runtime.NewScheme()
	if err := wasmv1.AddToScheme(scheme); err != nil {
		panic(err)
	}
	k8s, err = client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		panic(err)
	}
	code := m.Run()
	if err := env.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "stop the control plane:", err)
	}
	os.Exit(code)
}

// manifest turns a spec written as YAML into a WasmPlugin object, sent as the user wrote it.
func manifest(t *testing.T, name, spec string) *unstructured.Unstructured {
	t.Helper()
	var specMap map[string]any
	if err := yaml.Unmarshal([]byte(spec), &specMap); err != nil {
		t.Fatalf("bad test spec: %v", err)
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "wasm-operator.dev/v1alpha1",
		"kind":       "WasmPlugin",
		"metadata":   map[string]any{"name": name, "namespace": "default"},
		"spec":       specMap,
	}}
	return u
}

const pin = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

func TestValidation(t *testing.T) {
	tests := []struct {
		name    string
		spec    string
		wantErr string // empty: accepted
	}{
		// Accepted.
		{"http source", `source: {http: {url: "https://example.com/p.wasm"}}`, ""},
		{"plain http url", `source: {http: {url: "http://plugins.default.svc:8080/p.wasm", secretRef: {name: creds}}}`, ""},
		{"oci tag", `source: {oci: {image: "ghcr.io/org/plugin:v1"}}`, ""},
		{"oci digest", `source: {oci: {image: "localhost:5000/org/plugin@sha256:` + pin + `", insecure: true, pullSecretRef: {name: pull}}}`, ""},
		{"configMap", `source: {configMap: {name: my-plugin, key: plugin.wasm}}`, ""},
		{"pinned", `{source: {http: {url: "https://example.com/p.wasm"}}, sha256: ` + pin + `}`, ""},
		{"everything set", `
source: {http: {url: "https://example.com/p.wasm"}}
refreshInterval: 1h
config: {greeting: Hi}
permissions:
  http: {allowedHosts: [api.example.com, "*.example.org", "*"], allowPrivateNetworks: true, maxResponseBytes: 10Mi, timeout: 10s}
  vars: {maxBytes: 2Mi}
  log: {level: debug}
limits: {maxMemory: 128Mi, callTimeout: 1500ms, maxInputBytes: 1Mi, maxOutputBytes: 8Mi}
pool: {maxIdle: 4, maxConcurrency: 64, acquireTimeout: 0s, idleTTL: 10m, prewarm: 2, maxUses: 1000}
placement: {nodeSelector: {wasm: "true"}}
suspend: true`, ""},
		{"refresh never", `{source: {http: {url: "https://example.com/p.wasm"}}, refreshInterval: "0"}`, ""},
		{"refresh never 0s", `{source: {http: {url: "https://example.com/p.wasm"}}, refreshInterval: 0s}`, ""},
		{"kv defaults", `{source: {configMap: {name: a, key: b}}, permissions: {kv: {}}}`, ""},
		{"kv everything", `{source: {configMap: {name: a, key: b}}, permissions: {kv: {scope: Cluster, maxBytes: 8Mi, maxKeys: 5000, defaultTTL: 10m}}}`, ""},
		{"kv no expiry", `{source: {configMap: {name: a, key: b}}, permissions: {kv: {defaultTTL: "0"}}}`, ""},
		{"schedules", `{source: {configMap: {name: a, key: b}}, schedules: [
  {name: warm, schedule: "*/5 * * * *", function: warm, timeZone: Europe/Paris, input: "x", scope: Node, concurrencyPolicy: Allow, startingDeadline: 1m},
  {name: hourly, schedule: "@hourly", function: f, suspend: true},
  {name: often, schedule: "@every 30s", function: f},
  {name: weekdays, schedule: "0 9 * * MON-FRI", function: f}]}`, ""},
		{"memory as a plain number", `{source: {configMap: {name: a, key: b}}, limits: {maxMemory: 1048576}}`, ""},

		// Refused.
		{"no source", `source: {}`, "source must set exactly one of http, oci or configMap"},
		{"two sources", `source: {http: {url: "https://example.com/p.wasm"}, configMap: {name: a, key: b}}`, "source must set exactly one of http, oci or configMap"},
		{"missing source", `suspend: true`, "spec.source: Required value"},
		{"pin too short", `{source: {configMap: {name: a, key: b}}, sha256: abc}`, "sha256 must be 64 lowercase hex characters"},
		{"pin upper case", `{source: {configMap: {name: a, key: b}}, sha256: ` + strings.ToUpper(pin) + `}`, "sha256 must be 64 lowercase hex characters"},
		{"pin with prefix", `{source: {configMap: {name: a, key: b}}, sha256: "sha256:` + pin[:57] + `"}`, "sha256 must be 64 lowercase hex characters"},
		{"ftp url", `source: {http: {url: "ftp://example.com/p.wasm"}}`, "url must start with https:// or http://"},
		{"url without host", `source: {http: {url: "https://"}}`, "url must be an absolute URL with a host name"},
		{"empty url", `source: {http: {url: ""}}`, "spec.source.http.url"},
		{"oci with scheme", `source: {oci: {image: "https://ghcr.io/org/plugin:v1"}}`, "image must be an OCI reference"},
		{"oci upper-case repository", `source: {oci: {image: "ghcr.io/Org/Plugin:v1"}}`, "image must be an OCI reference"},
		{"oci short digest", `source: {oci: {image: "ghcr.io/org/plugin@sha256:abc"}}`, "image must be an OCI reference"},
		{"configMap empty key", `source: {configMap: {name: a, key: ""}}`, "spec.source.configMap.key"},
		{"configMap bad key", `source: {configMap: {name: a, key: "a/b"}}`, "configMap.key must be a ConfigMap key"},
		{"configMap bad name", `source: {configMap: {name: "My_Map", key: a}}`, "configMap.name must be a valid ConfigMap name"},
		{"negative maxIdle", `{source: {configMap: {name: a, key: b}}, pool: {maxIdle: -1}}`, "spec.pool.maxIdle: Invalid value: -1"},
		{"zero concurrency", `{source: {configMap: {name: a, key: b}}, pool: {maxConcurrency: 0}}`, "spec.pool.maxConcurrency: Invalid value: 0"},
		{"absurd concurrency", `{source: {configMap: {name: a, key: b}}, pool: {maxConcurrency: 100000}}`, "spec.pool.maxConcurrency: Invalid value: 100000"},
		{"prewarm over maxIdle", `{source: {configMap: {name: a, key: b}}, pool: {maxIdle: 2, prewarm: 3}}`, "pool.prewarm must not exceed pool.maxIdle"},
		{"prewarm over default maxIdle", `{source: {configMap: {name: a, key: b}}, pool: {prewarm: 9, maxConcurrency: 20}}`, "pool.prewarm must not exceed pool.maxIdle"},
		{"prewarm over concurrency", `{source: {configMap: {name: a, key: b}}, pool: {maxConcurrency: 2, prewarm: 3}}`, "pool.prewarm must not exceed pool.maxConcurrency"},
		{"acquire timeout too long", `{source: {configMap: {name: a, key: b}}, pool: {acquireTimeout: 2m}}`, "acquireTimeout must be a duration between 0s and 1m"},
		{"idle TTL too short", `{source: {configMap: {name: a, key: b}}, pool: {idleTTL: 10ms}}`, "idleTTL must be a duration between 1s and 24h"},
		{"call timeout zero", `{source: {configMap: {name: a, key: b}}, limits: {callTimeout: 0s}}`, "callTimeout must be a duration between 1ms and 10m"},
		{"call timeout too long", `{source: {configMap: {name: a, key: b}}, limits: {callTimeout: 1h}}`, "callTimeout must be a duration between 1ms and 10m"},
		{"call timeout not a duration", `{source: {configMap: {name: a, key: b}}, limits: {callTimeout: soon}}`, "callTimeout must be a duration between 1ms and 10m"},
		{"refresh too often", `{source: {configMap: {name: a, key: b}}, refreshInterval: 5s}`, "refreshInterval must be 0 (never) or between 30s and 168h"},
		{"refresh not a duration", `{source: {configMap: {name: a, key: b}}, refreshInterval: daily}`, "refreshInterval must be a duration"},
		{"too many allowed hosts", `{source: {configMap: {name: a, key: b}}, permissions: {http: {allowedHosts: [` + hosts(33) + `]}}}`, "spec.permissions.http.allowedHosts: Too many: 33: must have at most 32 items"},
		{"no allowed hosts", `{source: {configMap: {name: a, key: b}}, permissions: {http: {allowedHosts: []}}}`, "spec.permissions.http.allowedHosts"},
		{"host with scheme", `{source: {configMap: {name: a, key: b}}, permissions: {http: {allowedHosts: ["https://api.example.com"]}}}`, "allowedHosts entries must be lowercase host names"},
		{"inner wildcard", `{source: {configMap: {name: a, key: b}}, permissions: {http: {allowedHosts: ["api.*.example.com"]}}}`, "allowedHosts entries must be lowercase host names"},
		{"host with path", `{source: {configMap: {name: a, key: b}}, permissions: {http: {allowedHosts: ["example.com/api"]}}}`, "allowedHosts entries must be lowercase host names"},
		{"bad quantity", `{source: {configMap: {name: a, key: b}}, limits: {maxMemory: lots}}`, "spec.limits.maxMemory"},
		{"memory too small", `{source: {configMap: {name: a, key: b}}, limits: {maxMemory: 1Ki}}`, "maxMemory must be between 64Ki (one wasm page) and 4Gi"},
		{"memory too large", `{source: {configMap: {name: a, key: b}}, limits: {maxMemory: 16Gi}}`, "maxMemory must be between 64Ki (one wasm page) and 4Gi"},
		{"negative input cap", `{source: {configMap: {name: a, key: b}}, limits: {maxInputBytes: "-1"}}`, "maxInputBytes must be between 1 and 256Mi"},
		{"response cap too large", `{source: {configMap: {name: a, key: b}}, permissions: {http: {allowedHosts: [a.com], maxResponseBytes: 2Gi}}}`, "maxResponseBytes must be between 1 and 1Gi"},
		{"vars cap zero", `{source: {configMap: {name: a, key: b}}, permissions: {vars: {maxBytes: 0}}}`, "maxBytes must be between 1 and 64Mi"},
		{"kv unknown scope", `{source: {configMap: {name: a, key: b}}, permissions: {kv: {scope: Pod}}}`, `spec.permissions.kv.scope: Unsupported value: "Pod"`},
		{"kv too large", `{source: {configMap: {name: a, key: b}}, permissions: {kv: {maxBytes: 1Gi}}}`, "maxBytes must be between 1 and 64Mi"},
		{"kv no keys", `{source: {configMap: {name: a, key: b}}, permissions: {kv: {maxKeys: 0}}}`, "spec.permissions.kv.maxKeys: Invalid value: 0"},
		{"kv too many keys", `{source: {configMap: {name: a, key: b}}, permissions: {kv: {maxKeys: 1000000}}}`, "spec.permissions.kv.maxKeys: Invalid value: 1000000"},
		{"kv ttl too short", `{source: {configMap: {name: a, key: b}}, permissions: {kv: {defaultTTL: 10ms}}}`, "defaultTTL must be 0 (no expiry) or a duration between 1s and 8760h"},
		{"kv ttl not a duration", `{source: {configMap: {name: a, key: b}}, permissions: {kv: {defaultTTL: forever}}}`, "defaultTTL must be 0 (no expiry) or a duration between 1s and 8760h"},
		{"schedule not cron", `{source: {configMap: {name: a, key: b}}, schedules: [{name: a, schedule: "every five minutes", function: f}]}`, "schedule must be a cron expression of five fields"},
		{"schedule six fields", `{source: {configMap: {name: a, key: b}}, schedules: [{name: a, schedule: "0 */5 * * * *", function: f}]}`, "schedule must be a cron expression of five fields"},
		{"schedule every too often", `{source: {configMap: {name: a, key: b}}, schedules: [{name: a, schedule: "@every 500ms", function: f}]}`, "@every needs a duration of at least 1s"},
		{"schedule names not unique", `{source: {configMap: {name: a, key: b}}, schedules: [{name: a, schedule: "@hourly", function: f}, {name: a, schedule: "@daily", function: g}]}`, `spec.schedules[1]: Duplicate value`},
		{"too many schedules", `{source: {configMap: {name: a, key: b}}, schedules: [` + schedules(17) + `]}`, "spec.schedules: Too many: 17: must have at most 16 items"},
		{"schedule bad name", `{source: {configMap: {name: a, key: b}}, schedules: [{name: Warm_Up, schedule: "@hourly", function: f}]}`, "schedule names must be DNS labels"},
		{"schedule bad time zone", `{source: {configMap: {name: a, key: b}}, schedules: [{name: a, schedule: "@hourly", function: f, timeZone: "UTC+2 hours"}]}`, "timeZone must be an IANA time zone name"},
		{"schedule bad scope", `{source: {configMap: {name: a, key: b}}, schedules: [{name: a, schedule: "@hourly", function: f, scope: Pod}]}`, `spec.schedules[0].scope: Unsupported value: "Pod"`},
		{"schedule deadline zero", `{source: {configMap: {name: a, key: b}}, schedules: [{name: a, schedule: "@hourly", function: f, startingDeadline: 0s}]}`, "startingDeadline must be a duration between 1s and 24h"},
		{"schedule no function", `{source: {configMap: {name: a, key: b}}, schedules: [{name: a, schedule: "@hourly"}]}`, "spec.schedules[0].function: Required value"},
		{"unknown log level", `{source: {configMap: {name: a, key: b}}, permissions: {log: {level: verbose}}}`, `spec.permissions.log.level: Unsupported value: "verbose"`},
		{"empty config key", `{source: {configMap: {name: a, key: b}}, config: {"": x}}`, "config keys must be 1 to 253 characters long"},
	}
	ctx := context.Background()
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obj := manifest(t, fmt.Sprintf("case-%d", i), tt.spec)
			err := k8s.Create(ctx, obj, client.DryRunAll)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("valid manifest refused: %v", err)
			case tt.wantErr != "" && err == nil:
				t.Fatalf("invalid manifest accepted; want an error with %q", tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Fatalf("error does not say what is wrong:\n got: %v\nwant: ...%s...", err, tt.wantErr)
			}
		})
	}
}

func schedules(n int) string {
	s := make([]string, n)
	for i := range s {
		s[i] = fmt.Sprintf(`{name: s%d, schedule: "@hourly", function: f}`, i)
	}
	return strings.Join(s, ", ")
}

func hosts(n int) string {
	h := make([]string, n)
	for i := range h {
		h[i] = fmt.Sprintf("h%d.example.com", i)
	}
	return strings.Join(h, ", ")
}

// TestDefaultsRoundTrip stores plugins through the API server and checks that the getters resolve what the
// user left out to the documented defaults and keep what they set.
func TestDefaultsRoundTrip(t *testing.T) {
	ctx := context.Background()
	create := func(name, spec string) *wasmv1.WasmPlugin {
		t.Helper()
		if err := k8s.Create(ctx, manifest(t, name, spec)); err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
		var p wasmv1.WasmPlugin
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: "default", Name: name}, &p); err != nil {
			t.Fatalf("get %s: %v", name, err)
		}
		t.Cleanup(func() { _ = k8s.Delete(ctx, &p) })
		return &p
	}

	minimal := create("minimal", `source: {configMap: {name: a, key: b}}`)
	s := minimal.Spec
	var noKV *wasmv1.KVPermission // permissions.kv absent: the getters give the defaults it would have
	for _, c := range []struct {
		name      string
		got, want any
	}{
		{"refreshInterval", s.GetRefreshInterval(), 10 * time.Minute},
		{"maxMemory", s.Limits.GetMaxMemory(), int64(64 << 20)},
		{"callTimeout", s.Limits.GetCallTimeout(), 5 * time.Second},
		{"maxInputBytes", s.Limits.GetMaxInputBytes(), int64(4 << 20)},
		{"maxOutputBytes", s.Limits.GetMaxOutputBytes(), int64(4 << 20)},
		{"maxIdle", s.Pool.GetMaxIdle(), int32(8)},
		{"maxConcurrency", s.Pool.GetMaxConcurrency(), int32(10)},
		{"acquireTimeout", s.Pool.GetAcquireTimeout(), 5 * time.Second},
		{"idleTTL", s.Pool.GetIdleTTL(), time.Minute},
		{"prewarm", s.Pool.GetPrewarm(), int32(0)},
		{"maxUses", s.Pool.GetMaxUses(), int32(0)},
		{"log level", s.Permissions.GetLogLevel(), wasmv1.LogLevelInfo},
		{"http granted", s.Permissions.HTTPGranted(), false},
		{"vars granted", s.Permissions.VarsGranted(), false},
		{"kv granted", s.Permissions.KVGranted(), false},
		{"kv scope", noKV.GetScope(), wasmv1.KVScopeNode},
		{"kv maxBytes", noKV.GetMaxBytes(), int64(1 << 20)},
		{"kv maxKeys", noKV.GetMaxKeys(), int32(1024)},
		{"kv defaultTTL", noKV.GetDefaultTTL(), time.Duration(0)},
		{"nodeSelector", len(s.Placement.GetNodeSelector()), 0},
	} {
		if c.got != c.want {
			t.Errorf("default %s = %v, want %v", c.name, c.got, c.want)
		}
	}

	full := create("full", `
source: {configMap: {name: a, key: b}}
refreshInterval: 0s
permissions:
  http: {allowedHosts: [api.example.com]}
  vars: {maxBytes: 2Mi}
  log: {level: error}
  kv: {scope: Cluster, maxBytes: 3Mi, maxKeys: 7, defaultTTL: 90s}
limits: {maxMemory: 128Mi, callTimeout: 250ms, maxInputBytes: 1Ki, maxOutputBytes: 2Ki}
pool: {maxIdle: 1, maxConcurrency: 2, acquireTimeout: 0s, idleTTL: 2s, prewarm: 1, maxUses: 7}
placement: {nodeSelector: {zone: a}}
schedules:
- {name: plain, schedule: "@hourly", function: f}
- {name: set, schedule: "@daily", function: f, scope: Node, concurrencyPolicy: Allow, startingDeadline: 2m}`)
	f := full.Spec
	for _, c := range []struct {
		name      string
		got, want any
	}{
		{"refreshInterval", f.GetRefreshInterval(), time.Duration(0)},
		{"http maxResponseBytes default", f.Permissions.HTTP.GetMaxResponseBytes(), int64(50 << 20)},
		{"http timeout default", f.Permissions.HTTP.GetTimeout(), 30 * time.Second},
		{"vars maxBytes", f.Permissions.Vars.GetMaxBytes(), int64(2 << 20)},
		{"log level", f.Permissions.GetLogLevel(), wasmv1.LogLevelError},
		{"kv scope", f.Permissions.KV.GetScope(), wasmv1.KVScopeCluster},
		{"kv maxBytes", f.Permissions.KV.GetMaxBytes(), int64(3 << 20)},
		{"kv maxKeys", f.Permissions.KV.GetMaxKeys(), int32(7)},
		{"kv defaultTTL", f.Permissions.KV.GetDefaultTTL(), 90 * time.Second},
		{"maxMemory", f.Limits.GetMaxMemory(), int64(128 << 20)},
		{"callTimeout", f.Limits.GetCallTimeout(), 250 * time.Millisecond},
		{"maxInputBytes", f.Limits.GetMaxInputBytes(), int64(1024)},
		{"maxOutputBytes", f.Limits.GetMaxOutputBytes(), int64(2048)},
		{"maxIdle", f.Pool.GetMaxIdle(), int32(1)},
		{"maxConcurrency", f.Pool.GetMaxConcurrency(), int32(2)},
		{"acquireTimeout", f.Pool.GetAcquireTimeout(), time.Duration(0)},
		{"idleTTL", f.Pool.GetIdleTTL(), 2 * time.Second},
		{"prewarm", f.Pool.GetPrewarm(), int32(1)},
		{"maxUses", f.Pool.GetMaxUses(), int32(7)},
		{"nodeSelector", f.Placement.GetNodeSelector()["zone"], "a"},
		{"schedule scope default", f.Schedules[0].GetScope(), wasmv1.ScheduleScopeCluster},
		{"schedule concurrency default", f.Schedules[0].GetConcurrencyPolicy(), wasmv1.ConcurrencyForbid},
		{"schedule deadline default", f.Schedules[0].GetStartingDeadline(), time.Duration(0)},
		{"schedule scope", f.Schedules[1].GetScope(), wasmv1.ScheduleScopeNode},
		{"schedule concurrency", f.Schedules[1].GetConcurrencyPolicy(), wasmv1.ConcurrencyAllow},
		{"schedule deadline", f.Schedules[1].GetStartingDeadline(), 2 * time.Minute},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

// kubectl runs the control plane's kubectl as a cluster admin and returns its combined output.
func kubectl(t *testing.T, args ...string) string {
	t.Helper()
	user, err := env.AddUser(envtest.User{Name: "samples-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cmd, err := user.Kubectl()
	if err != nil {
		t.Fatal(err)
	}
	stdout, stderr, err := cmd.Run(args...)
	out, _ := io.ReadAll(stdout)
	errOut, _ := io.ReadAll(stderr)
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s%s", strings.Join(args, " "), err, out, errOut)
	}
	return string(out)
}

// TestSamples: the samples a user starts from are accepted by the API server, and kubectl explain shows
// the field documentation.
func TestSamples(t *testing.T) {
	samples := filepath.Join(testenv.RepoRoot(), "config", "samples")
	out := kubectl(t, "apply", "--dry-run=server", "-f", samples)
	for _, name := range []string{"shout", "count-vowels", "http-fetch"} {
		if !strings.Contains(out, "wasmplugin.wasm-operator.dev/"+name+" created (server dry run)") {
			t.Errorf("sample %s not accepted:\n%s", name, out)
		}
	}
	explain := kubectl(t, "explain", "wasmplugin.spec.pool")
	for _, want := range []string{"maxConcurrency", "how many calls run at once on one host", "Default 10; 1 to 1024"} {
		if !strings.Contains(explain, want) {
			t.Errorf("kubectl explain wasmplugin.spec.pool does not show %q:\n%s", want, explain)
		}
	}
}
