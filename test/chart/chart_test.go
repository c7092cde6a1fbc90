package chart

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
)

const (
	release = "wasm-operator"
	ns      = "wasm-operator-system"
)

var customValues = filepath.Join("testdata", "custom-values.yaml")

func TestLint(t *testing.T) {
	for _, flags := range [][]string{nil, {"-f", customValues}, {"--set", "host.enabled=false,rbac.create=false"}} {
		t.Run(strings.Join(flags, " "), func(t *testing.T) {
			out, err := Run(append([]string{"lint", "--strict", Dir()}, flags...)...)
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
		})
	}
}

// find returns the rendered object of kind whose name ends with suffix, failing when there is none.
func find(t *testing.T, objs []*unstructured.Unstructured, kind, suffix string) *unstructured.Unstructured {
	t.Helper()
	if o := lookup(objs, kind, suffix); o != nil {
		return o
	}
	t.Fatalf("no %s named *%s rendered", kind, suffix)
	return nil
}

func lookup(objs []*unstructured.Unstructured, kind, suffix string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == kind && strings.HasSuffix(o.GetName(), suffix) {
			return o
		}
	}
	return nil
}

func kinds(objs []*unstructured.Unstructured) map[string]int {
	m := map[string]int{}
	for _, o := range objs {
		m[o.GetKind()]++
	}
	return m
}

// str reads a string at path, or "" when it is absent.
func str(o *unstructured.Unstructured, path ...string) string {
	s, _, _ := unstructured.NestedFieldNoCopy(o.Object, path...)
	if s == nil {
		return ""
	}
	return fmt.Sprint(s)
}

// container returns the workload's only container.
func container(t *testing.T, o *unstructured.Unstructured) map[string]any {
	t.Helper()
	cs, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
	if len(cs) != 1 {
		t.Fatalf("%s %s: %d containers, want 1", o.GetKind(), o.GetName(), len(cs))
	}
	return cs[0].(map[string]any)
}

func args(t *testing.T, o *unstructured.Unstructured) []string {
	var out []string
	for _, a := range container(t, o)["args"].([]any) {
		out = append(out, a.(string))
	}
	return out
}

// envFrom returns the fieldRef path of the container's environment variable name.
func envFrom(t *testing.T, o *unstructured.Unstructured, name string) string {
	for _, e := range container(t, o)["env"].([]any) {
		e := e.(map[string]any)
		if e["name"] == name {
			return str(&unstructured.Unstructured{Object: e}, "valueFrom", "fieldRef", "fieldPath")
		}
	}
	return ""
}

func TestTemplateDefaults(t *testing.T) {
	objs, err := Render(release, ns)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{
		"CustomResourceDefinition": 2, "Deployment": 1, "DaemonSet": 1, "PersistentVolumeClaim": 1,
		"PodDisruptionBudget": 1, "Service": 2, "ServiceAccount": 3,
		"ClusterRole": 8, "ClusterRoleBinding": 4, // one pair for the signer of the hosts' certificates
		"Role": 2, "RoleBinding": 2, // the uninstall hook's, the signer's CA Secret and bundle ConfigMap
		"Job":                       1,                                        // the uninstall hook
		"ValidatingAdmissionPolicy": 1, "ValidatingAdmissionPolicyBinding": 1, // hosts write only their node's objects
	}
	if got := kinds(objs); !reflect.DeepEqual(got, want) {
		t.Errorf("rendered kinds = %v, want %v", got, want)
	}
	for _, o := range objs {
		if o.GetNamespace() != "" && o.GetNamespace() != ns {
			t.Errorf("%s %s in namespace %q, want the release namespace", o.GetKind(), o.GetName(), o.GetNamespace())
		}
		if len(o.GetName()) > 63 {
			t.Errorf("%s name %q longer than 63", o.GetKind(), o.GetName())
		}
	}

	crd := find(t, objs, "CustomResourceDefinition", "wasmplugins.wasm-operator.dev")
	if crd.GetAnnotations()["helm.sh/resource-policy"] != "keep" {
		t.Errorf("CRD annotations %v: want helm.sh/resource-policy: keep by default", crd.GetAnnotations())
	}

	dep := find(t, objs, "Deployment", "-controller")
	if got := str(dep, "spec", "replicas"); got != "1" {
		t.Errorf("controller replicas = %s, want 1", got)
	}
	for _, a := range []string{"controller", "--leader-elect=true", "--cache-dir=/var/cache/wasm-operator",
		"--metrics-bind-address=:8080", "--health-probe-bind-address=:8081", "--zap-log-level=info"} {
		if !slices.Contains(args(t, dep), a) {
			t.Errorf("controller args %v lack %s", args(t, dep), a)
		}
	}
	if got := envFrom(t, dep, "POD_NAMESPACE"); got != "metadata.namespace" {
		t.Errorf("controller POD_NAMESPACE from %q, want metadata.namespace", got)
	}
	c := &unstructured.Unstructured{Object: container(t, dep)}
	for path, want := range map[string]string{"livenessProbe.httpGet.path": "/healthz", "readinessProbe.httpGet.path": "/readyz"} {
		if got := str(c, strings.Split(path, ".")...); got != want {
			t.Errorf("controller %s = %q, want %q", path, got, want)
		}
	}
	if got := str(find(t, objs, "Service", "-controller-metrics"), "spec", "ports"); !strings.Contains(got, "port:8080") {
		t.Errorf("metrics Service ports %s, want 8080", got)
	}

	ds := find(t, objs, "DaemonSet", "-host")
	if got := envFrom(t, ds, "NODE_NAME"); got != "spec.nodeName" {
		t.Errorf("host NODE_NAME from %q, want spec.nodeName", got)
	}
	if got := envFrom(t, ds, "POD_NAMESPACE"); got != "metadata.namespace" {
		t.Errorf("host POD_NAMESPACE from %q, want metadata.namespace", got)
	}
	for _, a := range []string{"host", "--listen=:8181", "--auth=true", "--cache-dir=/var/cache/wasm-operator",
		"--tls-signer-name=wasm-operator.dev/" + ns + "." + release + "-host", "--tls-cert-duration=24h",
		"--tls-dns-names=" + hostDNSNames,
		"--token-audiences=wasm-operator", "--compile-cache-dir=/var/cache/wasm-operator-local"} {
		if !slices.Contains(args(t, ds), a) {
			t.Errorf("host args %v lack %s", args(t, ds), a)
		}
	}
	if !slices.Contains(args(t, dep), "--source-deny-private-networks=false") {
		t.Errorf("controller args %v lack --source-deny-private-networks=false", args(t, dep))
	}
	checkHostCacheAndTLS(t, objs, ds)
	svc := find(t, objs, "Service", "-host")
	if got := str(svc, "spec", "internalTrafficPolicy"); got != "Local" {
		t.Errorf("call API Service internalTrafficPolicy = %q, want Local", got)
	}

	pvc := find(t, objs, "PersistentVolumeClaim", "-cache")
	if got := str(pvc, "spec", "accessModes"); got != "[ReadWriteMany]" {
		t.Errorf("cache accessModes = %s, want [ReadWriteMany]", got)
	}
	if got := str(pvc, "spec", "resources", "requests", "storage"); got != "10Gi" {
		t.Errorf("cache size = %s, want 10Gi", got)
	}
	if _, ok, _ := unstructured.NestedFieldNoCopy(pvc.Object, "spec", "storageClassName"); ok {
		t.Error("cache claim sets storageClassName; by default it should use the cluster's default class")
	}
	if _, ok := pvc.GetAnnotations()["helm.sh/resource-policy"]; ok {
		t.Error("cache claim is kept on uninstall by default; cache.keep defaults to false")
	}
	for _, w := range []*unstructured.Unstructured{dep, ds} {
		if got := str(w, "spec", "template", "spec", "volumes"); !strings.Contains(got, "claimName:"+pvc.GetName()) {
			t.Errorf("%s volumes %s do not mount the cache claim %s", w.GetKind(), got, pvc.GetName())
		}
	}

	if got := str(find(t, objs, "ClusterRole", "-metrics-reader"), "rules"); got != "[map[nonResourceURLs:[/metrics] verbs:[get]]]" {
		t.Errorf("metrics reader rules = %s, want get on /metrics only", got)
	}
	caller := find(t, objs, "ClusterRole", "-caller")
	if caller.GetLabels()["rbac.authorization.k8s.io/aggregate-to-edit"] != "true" {
		t.Errorf("caller role labels %v: want aggregate-to-edit by default", caller.GetLabels())
	}
	if got := str(caller, "rules"); got != "[map[apiGroups:[wasm-operator.dev] resources:[wasmplugins/call] verbs:[create]]]" {
		t.Errorf("caller role rules = %s, want create on wasmplugins/call only", got)
	}
}

// TestHardening checks what a restricted Pod Security Standard and a security review ask of both workloads.
func TestHardening(t *testing.T) {
	objs, err := Render(release, ns, "-f", customValues)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []*unstructured.Unstructured{find(t, objs, "Deployment", "-controller"), find(t, objs, "DaemonSet", "-host")} {
		pod := &unstructured.Unstructured{Object: w.Object["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)}
		c := &unstructured.Unstructured{Object: container(t, w)}
		for path, want := range map[string]string{
			"securityContext.runAsNonRoot":                        "true",
			"securityContext.runAsUser":                           "65532",
			"securityContext.seccompProfile.type":                 "RuntimeDefault",
			"containers.0.securityContext.readOnlyRootFilesystem": "true",
		} {
			var got string
			if rest, ok := strings.CutPrefix(path, "containers.0."); ok {
				got = str(c, strings.Split(rest, ".")...)
			} else {
				got = str(pod, strings.Split(path, ".")...)
			}
			if got != want {
				t.Errorf("%s %s = %q, want %q", w.GetKind(), path, got, want)
			}
		}
		if got := str(c, "securityContext", "allowPrivilegeEscalation"); got != "false" {
			t.Errorf("%s allowPrivilegeEscalation = %q, want false", w.GetKind(), got)
		}
		if got := str(c, "securityContext", "capabilities", "drop"); got != "[ALL]" {
			t.Errorf("%s capabilities.drop = %s, want [ALL]", w.GetKind(), got)
		}
		if got := str(c, "resources", "limits", "memory"); got == "" {
			t.Errorf("%s has no memory limit", w.GetKind())
		}
	}
}

func TestTemplateValues(t *testing.T) {
	for _, tc := range []struct {
		name  string
		flags []string
		check func(t *testing.T, objs []*unstructured.Unstructured)
	}{
		{"custom values file", []string{"-f", customValues}, func(t *testing.T, objs []*unstructured.Unstructured) {
			if k := kinds(objs); k["CustomResourceDefinition"] != 0 || k["PersistentVolumeClaim"] != 0 || k["ServiceMonitor"] != 2 {
				t.Errorf("kinds %v: want no CRD (crds.enabled false), no claim (existingClaim), 2 ServiceMonitors", k)
			}
			for _, c := range []struct{ name, want string }{
				{"wasm-host", "bearerTokenFile:/var/run/secrets/kubernetes.io/serviceaccount/token"},
				{"wasm-controller", "bearerTokenFile:/var/run/secrets/kubernetes.io/serviceaccount/token"},
				{"wasm-controller", "scheme:https"},
			} {
				if got := str(find(t, objs, "ServiceMonitor", c.name), "spec", "endpoints"); !strings.Contains(got, c.want) {
					t.Errorf("%s ServiceMonitor endpoints %s: want %s, /metrics is guarded", c.name, got, c.want)
				}
			}
			if k := kinds(objs)["ClusterRole"]; k != 6 {
				t.Errorf("%d ClusterRoles, want controller, its signer, host, caller, metrics reader and uninstall hook only (aggregateToDefaultRoles false)", k)
			}
			if l := find(t, objs, "ClusterRole", "wasm-caller").GetLabels(); l["rbac.authorization.k8s.io/aggregate-to-edit"] != "" {
				t.Errorf("caller role labels %v: aggregateToEdit is false", l)
			}
			dep := find(t, objs, "Deployment", "wasm-controller")
			ds := find(t, objs, "DaemonSet", "wasm-host")
			if got := str(dep, "spec", "replicas"); got != "3" {
				t.Errorf("replicas = %s, want 3", got)
			}
			for _, w := range []*unstructured.Unstructured{dep, ds} {
				c := container(t, w)
				if c["image"] != "registry.example.com/platform/wasm-operator@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" || c["imagePullPolicy"] != "Always" {
					t.Errorf("%s image %v %v, want the digest and Always", w.GetKind(), c["image"], c["imagePullPolicy"])
				}
				if got := str(w, "spec", "template", "spec", "volumes"); !strings.Contains(got, "claimName:shared-wasm-cache") {
					t.Errorf("%s volumes %s, want the existing claim", w.GetKind(), got)
				}
				if got := str(w, "spec", "template", "spec", "imagePullSecrets"); got != "[map[name:regcred]]" {
					t.Errorf("%s imagePullSecrets = %s", w.GetKind(), got)
				}
			}
			for _, a := range []string{"--cache-dir=/cache", "--cache-max-size=8Gi", "--concurrency=16", "--gc-interval=1h",
				"--gc-grace=72h", "--max-module-size=64Mi", "--kube-api-qps=100", "--zap-log-level=debug"} {
				if !slices.Contains(args(t, dep), a) {
					t.Errorf("controller args %v lack %s", args(t, dep), a)
				}
			}
			if got := str(dep, "spec", "template", "spec", "serviceAccountName"); got != "wasm-ctl" {
				t.Errorf("controller serviceAccountName = %q, want wasm-ctl", got)
			}
			for _, a := range []string{"--listen=:9090", "--auth=true"} {
				if !slices.Contains(args(t, ds), a) {
					t.Errorf("host args %v lack %s", args(t, ds), a)
				}
			}
			if got := str(ds, "spec", "template", "spec", "tolerations"); !strings.Contains(got, "node-role.kubernetes.io/control-plane") {
				t.Errorf("host tolerations = %s", got)
			}
			if got := str(ds, "spec", "template", "spec", "nodeSelector"); got != "map[wasm.example.com/enabled:true]" {
				t.Errorf("host nodeSelector = %s", got)
			}
			if got := str(find(t, objs, "PodDisruptionBudget", "wasm-controller"), "spec"); !strings.Contains(got, "minAvailable:2") || strings.Contains(got, "maxUnavailable") {
				t.Errorf("PDB spec %s, want minAvailable 2 only", got)
			}
			if got := str(find(t, objs, "Service", "wasm-host"), "spec", "ports"); !strings.Contains(got, "port:80") {
				t.Errorf("host Service ports %s, want 80", got)
			}
			sm := find(t, objs, "ServiceMonitor", "wasm-host")
			if sm.GetLabels()["release"] != "prometheus" || !strings.Contains(str(sm, "spec", "endpoints"), "interval:15s") {
				t.Errorf("host ServiceMonitor %v %s", sm.GetLabels(), str(sm, "spec", "endpoints"))
			}
		}},
		{"CRD not kept", []string{"--set", "crds.keep=false"}, func(t *testing.T, objs []*unstructured.Unstructured) {
			if a := find(t, objs, "CustomResourceDefinition", "wasmplugins.wasm-operator.dev").GetAnnotations(); a["helm.sh/resource-policy"] != "" {
				t.Errorf("CRD annotations %v, want no keep policy", a)
			}
		}},
		{"cache claim kept, pre-bound", []string{"--set", "cache.keep=true,cache.storageClass=-,cache.size=100Gi,cache.accessModes={ReadWriteOnce}"}, func(t *testing.T, objs []*unstructured.Unstructured) {
			pvc := find(t, objs, "PersistentVolumeClaim", "-cache")
			if pvc.GetAnnotations()["helm.sh/resource-policy"] != "keep" {
				t.Errorf("claim annotations %v, want keep", pvc.GetAnnotations())
			}
			if sc, ok, _ := unstructured.NestedString(pvc.Object, "spec", "storageClassName"); !ok || sc != "" {
				t.Errorf("storageClassName = %q (set %v), want \"\"", sc, ok)
			}
			if got := str(pvc, "spec", "resources", "requests", "storage"); got != "100Gi" {
				t.Errorf("size = %s", got)
			}
		}},
		{"storage class", []string{"--set", "cache.storageClass=nfs-client"}, func(t *testing.T, objs []*unstructured.Unstructured) {
			if got := str(find(t, objs, "PersistentVolumeClaim", "-cache"), "spec", "storageClassName"); got != "nfs-client" {
				t.Errorf("storageClassName = %q", got)
			}
		}},
		{"no hosts", []string{"--set", "host.enabled=false"}, func(t *testing.T, objs []*unstructured.Unstructured) {
			for _, o := range objs {
				if o.GetLabels()["app.kubernetes.io/component"] == "host" {
					t.Errorf("%s %s rendered with host.enabled false", o.GetKind(), o.GetName())
				}
			}
		}},
		{"no RBAC", []string{"--set", "rbac.create=false,rbac.callerRole.create=false,rbac.aggregateToDefaultRoles=false"}, func(t *testing.T, objs []*unstructured.Unstructured) {
			for _, o := range objs {
				if strings.Contains(o.GetKind(), "Role") {
					t.Errorf("%s %s rendered with rbac.create false", o.GetKind(), o.GetName())
				}
			}
		}},
		{"existing ServiceAccounts", []string{"--set", "controller.serviceAccount.create=false,controller.serviceAccount.name=ctl,host.serviceAccount.create=false,host.serviceAccount.name=hst"}, func(t *testing.T, objs []*unstructured.Unstructured) {
			if k := kinds(objs)["ServiceAccount"]; k != 0 {
				t.Errorf("%d ServiceAccounts rendered, want 0", k)
			}
			sa, err := ServiceAccounts(objs)
			if err != nil || sa != (Accounts{Namespace: ns, Controller: "ctl", Host: "hst"}) {
				t.Errorf("ServiceAccounts = %+v, %v", sa, err)
			}
			if got := str(find(t, objs, "ClusterRoleBinding", "-host"), "subjects"); !strings.Contains(got, "name:hst") {
				t.Errorf("host binding subjects %s, want hst", got)
			}
		}},
		{"kv redis", []string{"--set", "kv.redis.address=redis.data:6379,kv.redis.passwordSecret.name=redis-auth,kv.redis.tls.enabled=true,kv.redis.tls.caSecret=redis-ca,kv.redis.username=wasm"}, func(t *testing.T, objs []*unstructured.Unstructured) {
			ds := find(t, objs, "DaemonSet", "-host")
			for _, a := range []string{"--kv-redis-address=redis.data:6379", "--kv-redis-db=0", "--kv-redis-key-prefix=wasm-operator:kv",
				"--kv-redis-username=wasm", "--kv-redis-tls=true", "--kv-redis-ca-file=/etc/wasm-operator/redis-ca/ca.crt"} {
				if !slices.Contains(args(t, ds), a) {
					t.Errorf("host args %v lack %s", args(t, ds), a)
				}
			}
			c := container(t, ds)
			if env := fmt.Sprint(c["env"]); !strings.Contains(env, "name:WASM_OPERATOR_KV_REDIS_PASSWORD valueFrom:map[secretKeyRef:map[key:password name:redis-auth]]") {
				t.Errorf("host env %s: want the password from the Secret", env)
			}
			if got := str(ds, "spec", "template", "spec", "volumes"); !strings.Contains(got, "secretName:redis-ca") {
				t.Errorf("host volumes %s: want the CA Secret", got)
			}
		}},
		{"no kv redis by default", nil, func(t *testing.T, objs []*unstructured.Unstructured) {
			ds := find(t, objs, "DaemonSet", "-host")
			if a := strings.Join(args(t, ds), " "); strings.Contains(a, "--kv-redis") || strings.Contains(fmt.Sprint(container(t, ds)["env"]), "REDIS") {
				t.Errorf("host args %s or env mention Redis with kv.redis.address empty", a)
			}
		}},
		{"image tag defaults to appVersion", nil, func(t *testing.T, objs []*unstructured.Unstructured) {
			if img := container(t, find(t, objs, "Deployment", "-controller"))["image"]; !strings.HasPrefix(fmt.Sprint(img), "ghcr.io/wasm-operator/wasm-operator:") || strings.HasSuffix(fmt.Sprint(img), ":") {
				t.Errorf("image = %v", img)
			}
		}},
		{"image tag", []string{"--set", "image.tag=v1.2.3"}, func(t *testing.T, objs []*unstructured.Unstructured) {
			if img := container(t, find(t, objs, "DaemonSet", "-host"))["image"]; img != "ghcr.io/wasm-operator/wasm-operator:v1.2.3" {
				t.Errorf("image = %v", img)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs, err := Render(release, ns, tc.flags...)
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, objs)
		})
	}
}

// TestBadValues shows that values.schema.json and the templates refuse what would install a broken
// operator, with a message that names the value.
// hostDNSNames are the names of the host Service, the only ones of a host's certificate.
var hostDNSNames = strings.Join([]string{release + "-host", release + "-host." + ns, release + "-host." + ns + ".svc",
	release + "-host." + ns + ".svc.cluster.local"}, ",")

// checkHostCacheAndTLS: the host mounts the shared cache read-only and compiles into a volume of its own
// node, its probes speak HTTPS, and it asks the controller for a certificate of its own (no Secret holds
// a serving key): the controller signs for the host Service's names and the hosts' ServiceAccount only,
// keeps its CA in a Secret it makes (nothing rendered: `helm template` works) and publishes the bundle.
func checkHostCacheAndTLS(t *testing.T, objs []*unstructured.Unstructured, ds *unstructured.Unstructured) {
	t.Helper()
	c := &unstructured.Unstructured{Object: container(t, ds)}
	mounts := map[string]string{}
	for _, m := range c.Object["volumeMounts"].([]any) {
		m := m.(map[string]any)
		mounts[m["name"].(string)] = fmt.Sprint(m["mountPath"], " ro=", m["readOnly"])
	}
	for name, want := range map[string]string{
		"cache":         "/var/cache/wasm-operator ro=true",
		"compile-cache": "/var/cache/wasm-operator-local ro=<nil>",
		"tls":           "",
	} {
		if mounts[name] != want {
			t.Errorf("host mount %s = %q, want %q", name, mounts[name], want)
		}
	}
	vols := str(ds, "spec", "template", "spec", "volumes")
	for _, want := range []string{"name:cache persistentVolumeClaim:map[claimName:wasm-operator-cache readOnly:true]",
		"emptyDir:map[sizeLimit:1Gi] name:compile-cache"} {
		if !strings.Contains(vols, want) {
			t.Errorf("host volumes %s lack %s", vols, want)
		}
	}
	for _, probe := range []string{"livenessProbe", "readinessProbe"} {
		if got := str(c, probe, "httpGet", "scheme"); got != "HTTPS" {
			t.Errorf("host %s scheme = %q, want HTTPS", probe, got)
		}
	}
	if s := lookup(objs, "Secret", "-host"); s != nil {
		t.Errorf("the chart renders the Secret %s: a key in the release", s.GetName())
	}
	dep := find(t, objs, "Deployment", "-controller")
	for _, a := range []string{"--host-signer-name=wasm-operator.dev/" + ns + "." + release + "-host",
		"--host-service-account=" + ns + "/" + release + "-host", "--host-dns-names=" + hostDNSNames,
		"--host-ca-secret=" + release + "-host-ca-key", "--host-ca-history-secret=" + release + "-host-ca-history", "--host-ca-generate=true", "--host-ca-configmap=" + release + "-host-ca",
		"--host-server-name=" + release + "-host." + ns + ".svc"} {
		if !slices.Contains(args(t, dep), a) {
			t.Errorf("controller args %v lack %s", args(t, dep), a)
		}
	}
	role := find(t, objs, "Role", "-controller-host-ca")
	if got := str(role, "rules"); !strings.Contains(got, "resourceNames:["+release+"-host-ca]") ||
		!strings.Contains(got, "resourceNames:["+release+"-host-ca-history "+release+"-host-ca-key]") || strings.Contains(got, "delete") {
		t.Errorf("the controller's CA Role %s: want create, and get and update on the CA Secrets and the bundle ConfigMap only", got)
	}
}

// TestHostTLSModes: with cert-manager the controller signs with an intermediate CA cert-manager issues
// (the chart makes no key and the controller makes no CA); a Secret of one's own is used as named.
func TestHostTLSModes(t *testing.T) {
	objs, err := Render(release, ns, "--set", "host.tls.mode=certManager", "--set", "host.tls.certManager.issuerRef.name=my-ca",
		"--set", "host.tls.certManager.issuerRef.kind=ClusterIssuer")
	if err != nil {
		t.Fatal(err)
	}
	crt := find(t, objs, "Certificate", "-host-ca")
	if got := str(crt, "spec", "secretName"); got != release+"-host-ca-key" {
		t.Errorf("Certificate secretName %q", got)
	}
	if got := str(crt, "spec", "isCA"); got != "true" {
		t.Errorf("Certificate isCA %q: the controller signs with it", got)
	}
	if got := str(crt, "spec", "issuerRef"); got != "map[group:cert-manager.io kind:ClusterIssuer name:my-ca]" {
		t.Errorf("Certificate issuerRef %s", got)
	}
	dep := find(t, objs, "Deployment", "-controller")
	if !slices.Contains(args(t, dep), "--host-ca-generate=false") || !slices.Contains(args(t, dep), "--host-ca-secret="+release+"-host-ca-key") {
		t.Errorf("controller args %v: want the cert-manager CA, none made", args(t, dep))
	}
	if got := str(find(t, objs, "Role", "-controller-host-ca"), "rules"); strings.Contains(got, release+"-host-ca-key") {
		t.Errorf("with cert-manager the controller never writes the CA Secret, but its Role says %s", got)
	}
	if lookup(objs, "Secret", "-host") != nil {
		t.Error("the chart made a key although cert-manager issues the CA")
	}
	objs, err = Render(release, ns, "--set", "host.tls.mode=secret", "--set", "host.tls.secretName=my-host-cert")
	if err != nil {
		t.Fatal(err)
	}
	ds := find(t, objs, "DaemonSet", "-host")
	if got := str(ds, "spec", "template", "spec", "volumes"); !strings.Contains(got, "secretName:my-host-cert") {
		t.Errorf("host volumes %s do not use my-host-cert", got)
	}
	for _, a := range []string{"--tls-cert-file=/etc/wasm-operator/tls/tls.crt", "--tls-key-file=/etc/wasm-operator/tls/tls.key"} {
		if !slices.Contains(args(t, ds), a) {
			t.Errorf("host args %v lack %s", args(t, ds), a)
		}
	}
	if lookup(objs, "Certificate", "-host") != nil || lookup(objs, "Role", "-controller-host-ca") != nil ||
		slices.ContainsFunc(args(t, find(t, objs, "Deployment", "-controller")), func(a string) bool { return strings.HasPrefix(a, "--host-signer-name") }) {
		t.Error("mode secret rendered a signer or certificate of its own")
	}
}

func TestBadValues(t *testing.T) {
	for _, tc := range []struct {
		set, want string
	}{
		{"controler.replicas=2", "additional properties 'controler' not allowed"},
		{"image.pullPolicy=Sometimes", "at '/image/pullPolicy': value must be one of 'Always', 'IfNotPresent', 'Never'"},
		{"image.repository=", "at '/image/repository'"},
		{"image.digest=sha256:abc", "at '/image/digest'"},
		{"image.tag=has space", "at '/image/tag'"},
		{"logLevel=loud", "at '/logLevel': value must be one of 'debug', 'info', 'error'"},
		{"crds.enabled=yes", "at '/crds/enabled': got string, want boolean"},
		{"crds.keep=1", "at '/crds/keep': got number, want boolean"},
		{"cache.size=ten gigs", "at '/cache/size': 'ten gigs' does not match pattern"},
		{"cache.maxSize=lots", "at '/cache/maxSize'"},
		{"cache.accessModes={ReadWriteSometimes}", "at '/cache/accessModes/0'"},
		{"cache.accessModes=null", "at '/cache'"},
		{"cache.existingClaim=Not_A_Name", "at '/cache/existingClaim'"},
		{"cache.mountPath=relative/path", "at '/cache/mountPath'"},
		{"controller.replicas=-1", "at '/controller/replicas': minimum: got -1, want 0"},
		{"controller.replicas=two", "at '/controller/replicas': got string, want integer"},
		{"controller.concurrency=0", "at '/controller/concurrency': minimum: got 0, want 1"},
		{"controller.gcInterval=10 minutes", "at '/controller/gcInterval'"},
		{"controller.gcGrace=1d", "at '/controller/gcGrace'"},
		{"controller.maxModuleSize=big", "at '/controller/maxModuleSize'"},
		{"controller.metricsPort=0", "at '/controller/metricsPort': minimum: got 0, want 1"},
		{"host.port=70000", "at '/host/port': maximum: got 70,000, want 65,535"},
		{"host.auth=maybe", "at '/host/auth': got string, want boolean"},
		{"host.auth=false", "at '/host/auth': value must be true"},
		{"host.extraArgs={listen}", "at '/host/extraArgs/0'"},
		{"host.updateStrategy.type=Sometimes", "at '/host/updateStrategy/type'"},
		{"host.tls.mode=none", "at '/host/tls/mode'"},
		{"host.tls.mode=certManager", "host.tls.mode certManager needs host.tls.certManager.issuerRef.name"},
		{"host.tls.mode=secret", "host.tls.mode secret needs host.tls.secretName"},
		{"host.serviceAccount.create=false", `the hosts' ServiceAccount "default" is also another's`},
		{"host.tls.certDuration=1d", "at '/host/tls/certDuration'"},
		{"host.tokenAudiences=null", "at '/host'"},
		{"host.compileCache.type=shared", "at '/host/compileCache/type'"},
		{"controller.sourceDenyPrivateNetworks=sometimes", "at '/controller/sourceDenyPrivateNetworks'"},
		{"host.updateStrategy.bogus=1", "at '/host/updateStrategy': additional properties 'bogus' not allowed"},
		{"host.updateStrategy.rollingUpdate.maxSurge=banana", "at '/host/updateStrategy/rollingUpdate/maxSurge'"},
		{"host.updateStrategy.rollingUpdate.maxUnavailble=1", "additional properties 'maxUnavailble' not allowed"},
		{"host.drainDelay=soon", "at '/host/drainDelay'"},
		{"host.drainDelay=1d", "at '/host/drainDelay'"},
		{"host.tolerations[0].efect=NoSchedule", "at '/host/tolerations/0': additional properties 'efect' not allowed"},
		{"controller.affinity.nodeAfinity.x=1", "at '/controller/affinity': additional properties 'nodeAfinity' not allowed"},
		{"cache.setOwner=yes", "at '/cache/setOwner': got string, want boolean"},
		{"serviceMonitor.interval=often", "at '/serviceMonitor/interval'"},
		{"rbac.callerRole.create=on", "at '/rbac/callerRole/create': got string, want boolean"},
		{"controller.podDisruptionBudget.minAvailable=half", "at '/controller/podDisruptionBudget/minAvailable'"},
		{"kv.redis.address=redis", "at '/kv/redis/address'"},
		{"kv.redis.db=16", "at '/kv/redis/db': maximum: got 16, want 15"},
		{"kv.redis.passwordSecret.name=Bad_Name", "at '/kv/redis/passwordSecret/name'"},
		{"kv.redis.tls.enabled=yes", "at '/kv/redis/tls/enabled': got string, want boolean"},
		{"controller.replicas=2,controller.leaderElection=false", "controller.replicas > 1 needs controller.leaderElection: true"},
		{"controller.podDisruptionBudget.minAvailable=1", "set either minAvailable or maxUnavailable, not both"},
	} {
		t.Run(tc.set, func(t *testing.T) {
			out, err := Template(release, ns, "--set", tc.set)
			if err == nil {
				t.Fatalf("rendered with %s:\n%.300s", tc.set, out)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error for %s:\n%v\nwant it to contain %q", tc.set, err, tc.want)
			}
		})
	}
}

// roleRules collects the rules of every Role and ClusterRole in objs by kind and name.
func roleRules(t *testing.T, objs []*unstructured.Unstructured) map[string][]rbacv1.PolicyRule {
	t.Helper()
	out := map[string][]rbacv1.PolicyRule{}
	for _, o := range objs {
		if o.GetKind() != "ClusterRole" && o.GetKind() != "Role" {
			continue
		}
		var r rbacv1.ClusterRole
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &r); err != nil {
			t.Fatal(err)
		}
		out[o.GetKind()+"/"+o.GetName()] = r.Rules
	}
	return out
}

func TestNoWildcards(t *testing.T) {
	for _, flags := range [][]string{nil, {"-f", customValues}} {
		objs, err := Render(release, ns, flags...)
		if err != nil {
			t.Fatal(err)
		}
		rules := roleRules(t, objs)
		if len(rules) == 0 {
			t.Fatal("no roles rendered")
		}
		for name, rs := range rules {
			for _, r := range rs {
				for _, field := range [][]string{r.APIGroups, r.Resources, r.Verbs, r.ResourceNames, r.NonResourceURLs} {
					for _, v := range field {
						if strings.Contains(v, "*") {
							t.Errorf("%s has a wildcard rule: %+v", name, r)
						}
					}
				}
			}
		}
	}
}

// TestRBACMatchesGenerated checks that each component's roles in the chart hold exactly the rules that
// controller-gen derived from the code's RBAC markers (config/rbac/<component>/role.yaml).
func TestRBACMatchesGenerated(t *testing.T) {
	objs, err := Render(release, ns)
	if err != nil {
		t.Fatal(err)
	}
	chartRules := roleRules(t, objs)
	files, _ := filepath.Glob(filepath.Join(RepoRoot(), "config", "rbac", "*", "role.yaml"))
	if len(files) == 0 {
		t.Fatal("no config/rbac/*/role.yaml: run 'make manifests'")
	}
	for _, f := range files {
		component := filepath.Base(filepath.Dir(f))
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		generated, err := Decode(data)
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range generated {
			key := fmt.Sprintf("%s/%s-%s", g.GetKind(), release, component)
			want := roleRules(t, []*unstructured.Unstructured{g})[g.GetKind()+"/"+g.GetName()]
			got, ok := chartRules[key]
			if !ok {
				t.Errorf("%s: the chart has no %s", f, key)
				continue
			}
			if !reflect.DeepEqual(normalize(got), normalize(want)) {
				t.Errorf("%s rules differ from %s (run 'make chart-crds'):\nchart: %+v\nconfig: %+v", key, f, got, want)
			}
		}
	}
}

func normalize(rules []rbacv1.PolicyRule) []string {
	var out []string
	for _, r := range rules {
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					out = append(out, g+"/"+res+":"+v+fmt.Sprint(r.ResourceNames))
				}
			}
		}
		for _, u := range r.NonResourceURLs {
			for _, v := range r.Verbs {
				out = append(out, u+":"+v)
			}
		}
	}
	sort.Strings(out)
	return out
}

// TestGeneratedCopiesCurrent checks that the chart's CRD and RBAC templates are what `make chart-crds`
// writes from config/ now.
func TestGeneratedCopiesCurrent(t *testing.T) {
	root := RepoRoot()
	cmd := exec.Command("go", "run", "-C", filepath.Join(root, "hack", "tools", "gen"), "./chartsync", "-root", root, "-check")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
}

func TestServiceAccounts(t *testing.T) {
	objs, err := Render("ops", "platform")
	if err != nil {
		t.Fatal(err)
	}
	sa, err := ServiceAccounts(objs)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Accounts{Namespace: "platform", Controller: "ops-wasm-operator-controller", Host: "ops-wasm-operator-host"}); sa != want {
		t.Errorf("ServiceAccounts = %+v, want %+v", sa, want)
	}
	// Each is a rendered ServiceAccount, bound to its component's ClusterRole.
	for _, name := range []string{sa.Controller, sa.Host} {
		find(t, objs, "ServiceAccount", name)
		b := find(t, objs, "ClusterRoleBinding", name)
		if got := str(b, "subjects"); got != fmt.Sprintf("[map[kind:ServiceAccount name:%s namespace:platform]]", name) {
			t.Errorf("%s subjects = %s", b.GetName(), got)
		}
	}
	if got := sa.Impersonate(sa.Host).UserName; got != "system:serviceaccount:platform:ops-wasm-operator-host" {
		t.Errorf("Impersonate user = %q", got)
	}
	if _, err := ServiceAccounts(nil); err == nil {
		t.Error("ServiceAccounts of nothing: no error")
	}
}

// TestUninstallHook: `helm uninstall` first runs a Job that stops the hosts and waits for the plugins to
// leave Ready; its roles may read plugins and delete the release's host DaemonSet, nothing more; every
// object of it is a pre-delete hook that Helm removes once it succeeded.
func TestUninstallHook(t *testing.T) {
	objs, err := Render(release, ns)
	if err != nil {
		t.Fatal(err)
	}
	job := find(t, objs, "Job", "-uninstall")
	c := &unstructured.Unstructured{Object: container(t, job)}
	if got := str(c, "args"); got != "[uninstall --namespace="+ns+" --host-daemonset="+release+"-host --timeout=2m]" {
		t.Errorf("uninstall Job args = %s", got)
	}
	if got := str(job, "spec", "activeDeadlineSeconds"); got != "180" {
		t.Errorf("activeDeadlineSeconds = %s, want the timeout and a minute", got)
	}
	rules := roleRules(t, objs)
	if got := fmt.Sprint(rules["ClusterRole/"+release+"-uninstall"]); got != "[{[get list] [wasm-operator.dev] [wasmplugins] [] []}]" {
		t.Errorf("uninstall ClusterRole rules = %s, want get and list of wasmplugins only", got)
	}
	if got := fmt.Sprint(rules["Role/"+release+"-uninstall"]); got != "[{[get delete] [apps] [daemonsets] ["+release+"-host] []}]" {
		t.Errorf("uninstall Role rules = %s, want get and delete of the host DaemonSet only", got)
	}
	for _, o := range objs {
		if o.GetLabels()["app.kubernetes.io/component"] != "uninstall" {
			continue
		}
		if a := o.GetAnnotations(); a["helm.sh/hook"] != "pre-delete" || a["helm.sh/hook-delete-policy"] != "before-hook-creation,hook-succeeded,hook-failed" {
			t.Errorf("%s %s annotations %v: want a pre-delete hook deleted when it ends", o.GetKind(), o.GetName(), a)
		}
	}
	objs, err = Render(release, ns, "--set", "uninstallHook.enabled=false")
	if err != nil {
		t.Fatal(err)
	}
	if k := kinds(objs)["Job"]; k != 0 {
		t.Errorf("%d Jobs with uninstallHook.enabled false", k)
	}
}
