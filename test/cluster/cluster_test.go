//go:build cluster

package cluster

import (
	"bytes"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	wasmv1 "github.com/wasm-operator/wasm-operator/api/v1alpha1"
	"github.com/wasm-operator/wasm-operator/internal/image"
	"github.com/wasm-operator/wasm-operator/internal/testplugins"
)

var k *Cluster

const (
	release   = "wasm-operator"
	namespace = "wasm-operator-system"
	hostLabel = "app.kubernetes.io/instance=" + release + ",app.kubernetes.io/component=host"
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "wasm-operator-cluster-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := 1
	before := machineState()
	k, err = Up(dir)
	if err == nil {
		err = importCaller(dir)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
	} else {
		code = m.Run()
	}
	logs := filepath.Join(root(), "tmp", "cluster-logs")
	if k == nil {
		k = &Cluster{Dir: dir}
	}
	if err := k.Down(logs); err != nil {
		fmt.Fprintln(os.Stderr, "hack/cluster.sh down:", err)
		code = 1
	}
	if after := machineState(); after != before {
		fmt.Fprintf(os.Stderr, "hack/cluster.sh down left the machine changed:\nbefore:\n%s\nafter:\n%s\n", before, after)
		code = 1
	}
	os.Exit(code)
}

// machineState describes what the cluster changes on the machine: links, addresses, routes, iptables
// chains, sysctls, folders, processes of its node components (etcd and kube-apiserver run in other tests too).
func machineState() string {
	var b strings.Builder
	for _, c := range [][]string{{"ip", "-o", "link", "show"}, {"ip", "-o", "addr", "show"}, {"ip", "route", "show"},
		{"sh", "-c", "iptables-save 2>/dev/null | grep -v '^#' | grep -c KUBE- || true"},
		{"cat", "/proc/sys/net/ipv4/ip_forward"},
		// What the kubelet sets (hack/cluster.sh CHANGED_SYSCTLS; kube-proxy's conntrack timeouts are put
		// back too, but exist only once nf_conntrack is loaded, which kube-proxy may do itself).
		{"sh", "-c", "cd /proc/sys && grep -H . vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops kernel/keys/root_maxkeys kernel/keys/root_maxbytes 2>/dev/null || true"},
		{"sh", "-c", "ls -d /run/containerd /var/lib/cni /var/lib/kubelet /sys/fs/cgroup/*/wasm-operator-cluster 2>/dev/null || true"},
		{"sh", "-c", "pgrep -x 'kubelet|kube-proxy|containerd|containerd-shim' || true"}} {
		out, _ := exec.Command(c[0], c[1:]...).CombinedOutput()
		// veth names and link indexes change; count links instead of listing them.
		if c[0] == "ip" && c[1] == "-o" {
			fmt.Fprintf(&b, "%s: %d lines\n", strings.Join(c, " "), strings.Count(string(out), "\n"))
			continue
		}
		fmt.Fprintf(&b, "%s:\n%s", strings.Join(c, " "), out)
	}
	return b.String()
}

// importCaller builds test/cluster/caller as a static binary and imports its image into the node.
func importCaller(dir string) error {
	bin := filepath.Join(dir, "caller")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "./caller")
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("build the caller: %w\n%s", err, out)
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		return err
	}
	img, err := image.Static(b, "/caller", "65532:65532")
	if err != nil {
		return err
	}
	tarball := filepath.Join(dir, "caller.tar")
	if err := image.Write(tarball, CallerImage, img); err != nil {
		return err
	}
	return k.Import(tarball)
}

// servePlugins serves the example plugins over HTTP and an OCI registry on the node's address, where the
// controller pod reaches them; nothing leaves the machine. stop ends both.
func servePlugins(t *testing.T) (httpBase, registryHost string, stop func()) {
	t.Helper()
	files := http.NewServeMux()
	for _, p := range []string{"greet", "http-fetch"} {
		path := testplugins.Build(t, p)
		files.HandleFunc("/"+p+".wasm", func(w http.ResponseWriter, r *http.Request) { http.ServeFile(w, r, path) })
	}
	fl, err := net.Listen("tcp", NodeIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	fsrv := &http.Server{Handler: files}
	go fsrv.Serve(fl)
	rl, err := net.Listen("tcp", NodeIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	rsrv := &http.Server{Handler: registry.New(registry.Logger(log.New(io.Discard, "", 0)))}
	go rsrv.Serve(rl)
	registryHost = rl.Addr().String()

	wasm, err := os.ReadFile(testplugins.Build(t, "count-vowels"))
	if err != nil {
		t.Fatal(err)
	}
	var img v1.Image = mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, "application/vnd.wasm.config.v1+json")
	if img, err = mutate.Append(img, mutate.Addendum{Layer: static.NewLayer(wasm, "application/vnd.wasm.content.layer.v1+wasm")}); err != nil {
		t.Fatal(err)
	}
	ref, err := name.NewTag(registryHost+"/plugins/count-vowels:v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	var stopped bool
	stop = func() {
		if !stopped {
			stopped = true
			fsrv.Close()
			rsrv.Close()
		}
	}
	t.Cleanup(stop)
	return "http://" + fl.Addr().String(), registryHost, stop
}

// sample reads config/samples/<file> with each old string replaced by its new one.
func sample(t *testing.T, file string, oldnew ...string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root(), "config", "samples", file))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for i := 0; i < len(oldnew); i += 2 {
		if !strings.Contains(s, oldnew[i]) {
			t.Fatalf("config/samples/%s no longer holds %q", file, oldnew[i])
		}
		s = strings.ReplaceAll(s, oldnew[i], oldnew[i+1])
	}
	return s
}

// TestChart installs, uses, upgrades and uninstalls the chart as its users do, one step after the other.
func TestChart(t *testing.T) {
	start := time.Now()
	step := func(what string) { t.Logf("+%4.0fs %s", time.Since(start).Seconds(), what) }

	// The cache: a ReadWriteMany hostPath volume standing in for a storage class's, bound to the
	// chart's claim. The kubelet creates its folder owned by root, as such volumes come.
	step("cache volume and helm install")
	k.Apply(t, fmt.Sprintf(`apiVersion: v1
kind: PersistentVolume
metadata: {name: wasm-operator-cache}
spec:
  capacity: {storage: 10Gi}
  accessModes: [ReadWriteMany]
  persistentVolumeReclaimPolicy: Retain
  claimRef: {namespace: %s, name: %s-cache}
  hostPath: {path: %s, type: DirectoryOrCreate}
`, namespace, release, filepath.Join(k.Dir, "volumes", "cache")))
	chart := filepath.Join(root(), "charts", "wasm-operator")
	if c := os.Getenv("WASM_OPERATOR_CHART"); c != "" { // another copy of the chart, such as a broken one
		chart = c
	}
	install := []string{"--namespace", namespace, "--set", "image.repository=localhost/wasm-operator,image.tag=dev,image.pullPolicy=Never,cache.storageClass=-",
		"--wait", "--timeout", "3m"}
	notes := k.Helm(t, append([]string{"install", release, chart, "--create-namespace"}, install...)...)
	if !strings.Contains(notes, "examples/shout/shout.wasm") {
		t.Errorf("the install notes do not show the offline sample:\n%s", notes)
	}
	k.Kubectl(t, "wait", "-n", namespace, "--for=condition=Ready", "pod", "-l", "app.kubernetes.io/instance="+release, "--timeout=60s")

	step("samples")
	httpBase, registryHost, stopServing := servePlugins(t)
	k.Kubectl(t, "label", "node", "node-1", "wasm=enabled") // the http-fetch sample's placement
	k.Kubectl(t, "create", "configmap", "shout", "-n", "default", "--from-file=plugin.wasm="+filepath.Join(root(), "examples", "shout", "shout.wasm"))
	k.Apply(t, sample(t, "configmap.yaml"))
	k.Apply(t, sample(t, "count-vowels-oci.yaml", "image: ghcr.io/example/count-vowels:v1", "image: "+registryHost+"/plugins/count-vowels:v1\n      insecure: true"))
	k.Apply(t, sample(t, "http-fetch.yaml", "https://plugins.example.com", httpBase))
	k.Apply(t, fmt.Sprintf(`apiVersion: wasm-operator.dev/v1alpha1
kind: WasmPlugin
metadata: {name: greet, namespace: default}
spec:
  source: {http: {url: %s/greet.wasm}}
  config: {greeting: Hello}
`, httpBase))
	k.Kubectl(t, "wait", "wasmplugin", "--all", "-A", "--for=condition=Ready", "--timeout=3m")
	// The modules were compiled in a child confined by Landlock under containerd's default seccomp
	// profile: the manager says at start when it cannot confine them.
	for _, c := range []string{"deploy/" + release + "-controller", "daemonset/" + release + "-host"} {
		if logs := k.Kubectl(t, "logs", "-n", namespace, c); strings.Contains(logs, "compile sandbox:") {
			t.Errorf("%s compiles unconfined in the cluster:\n%s", c, grepLines(logs, "compile sandbox:"))
		}
	}

	step("calls")
	// What a caller trusts, from the chart's ConfigMap (docs/calling-plugins.md copies it likewise).
	ca := k.Kubectl(t, "get", "configmap", "-n", namespace, release+"-host-ca", "-o", "jsonpath={.data.ca\\.crt}")
	caller := Caller{Namespace: "callers", ServiceAccount: "app", Pod: "caller", CA: ca,
		ServerName: release + "-host." + namespace + ".svc"}
	k.Apply(t, caller.Manifest())
	k.Kubectl(t, "wait", "-n", caller.Namespace, "--for=condition=Ready", "pod/"+caller.Pod, "--timeout=60s")
	svcIP := strings.TrimSpace(k.Kubectl(t, "get", "service", "-n", namespace, release+"-host", "-o", "jsonpath={.spec.clusterIP}"))
	shout := URL(svcIP, 8181, "default", "shout", "shout")
	Eventually(t, 30*time.Second, "a caller without a RoleBinding", func() error {
		if code, body := caller.Call(t, k, shout, "hello"); code != http.StatusForbidden {
			return fmt.Errorf("got %d %q, want 403", code, body)
		}
		return nil
	})
	k.Kubectl(t, "create", "rolebinding", "app-calls-plugins", "-n", "default", "--clusterrole="+release+"-caller",
		"--serviceaccount="+caller.Namespace+":"+caller.ServiceAccount)
	// The pod's token of the API server's audience is refused even with the role: hosts accept only
	// tokens that are worthless against the API server.
	Eventually(t, 30*time.Second, "a caller with a token of the API server's audience", func() error {
		if code, body := caller.CallWithToken(t, k, shout, "hello", APIServerTokenPath); code != http.StatusUnauthorized {
			return fmt.Errorf("got %d %q, want 401", code, body)
		}
		return nil
	})
	Eventually(t, 30*time.Second, "a caller with the caller role", func() error {
		if code, body := caller.Call(t, k, shout, "Hello, cluster"); code != http.StatusOK || body != "HELLO, CLUSTER" {
			return fmt.Errorf("got %d %q, want 200 HELLO, CLUSTER", code, body)
		}
		return nil
	})
	for _, c := range []struct{ name, fn, in, want string }{
		{"count-vowels", "count_vowels", "Hello, cluster", `{"count":4,"total":4,"vowels":"aeiouAEIOU"}`},
		{"greet", "greet", "cluster", "Hello, cluster!"},
	} {
		if code, body := caller.Call(t, k, URL(svcIP, 8181, "default", c.name, c.fn), c.in); code != http.StatusOK || body != c.want {
			t.Errorf("%s: got %d %q, want 200 %q", c.name, code, body, c.want)
		}
	}

	step("helm upgrade while calling")
	oldHost := hostPods(t)
	loop := exec.Command(filepath.Join(k.Bin, "kubectl"), caller.Command("loop", shout, "upgrade")...)
	loop.Env = append(os.Environ(), "KUBECONFIG="+k.Kubeconfig)
	stdin, err := loop.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var loopOut bytes.Buffer
	loop.Stdout, loop.Stderr = &loopOut, &loopOut
	if err := loop.Start(); err != nil {
		t.Fatal(err)
	}
	k.Helm(t, append([]string{"upgrade", release, chart, "--reuse-values", "--set", "host.podAnnotations.upgraded=yes,logLevel=debug"}, install...)...)
	Eventually(t, 2*time.Minute, "the new host alone", func() error {
		if pods := hostPods(t); len(pods) != 1 || pods[0] == oldHost[0] {
			return fmt.Errorf("host pods %v (before: %v)", pods, oldHost)
		}
		return nil
	})
	k.Kubectl(t, "rollout", "status", "-n", namespace, "daemonset/"+release+"-host", "--timeout=60s")
	stdin.Close()
	if err := loop.Wait(); err != nil {
		t.Fatalf("the calling loop: %v\n%s", err, loopOut.String())
	}
	summary, _, _ := strings.Cut(loopOut.String(), "\n")
	var calls, failed int
	if _, err := fmt.Sscanf(summary, "calls %d failed %d", &calls, &failed); err != nil || calls < 20 || failed != 0 {
		t.Errorf("calls during helm upgrade: %s", loopOut.String())
	}
	t.Logf("calls during the upgrade: %s", summary)

	step("host pod deleted, sources gone: served from the cache")
	stopServing()
	before := hostPods(t)
	k.Kubectl(t, "delete", "pod", "-n", namespace, before[0], "--wait=false")
	Eventually(t, 2*time.Minute, "a new host", func() error {
		pods := hostPods(t)
		if len(pods) != 1 || pods[0] == before[0] {
			return fmt.Errorf("host pods %v", pods)
		}
		_, err := k.run("", filepath.Join(k.Bin, "kubectl"), "wait", "-n", namespace, "--for=condition=Ready", "pod/"+pods[0], "--timeout=1s")
		return err
	})
	Eventually(t, time.Minute, "greet served by the new host", func() error {
		if code, body := caller.Call(t, k, URL(svcIP, 8181, "default", "greet", "greet"), "again"); code != http.StatusOK || body != "Hello, again!" {
			return fmt.Errorf("got %d %q", code, body)
		}
		return nil
	})

	step("helm uninstall")
	manifest := k.Helm(t, "get", "manifest", release, "--namespace", namespace)
	k.Helm(t, "uninstall", release, "--namespace", namespace, "--wait", "--timeout", "2m")
	// docs/install.md: the CRD and the plugins stay; everything else of the release goes.
	k.Kubectl(t, "get", "crd", "wasmplugins.wasm-operator.dev")
	if got := strings.Fields(k.Kubectl(t, "get", "wasmplugins", "-A", "-o", "name")); len(got) != 4 {
		t.Errorf("plugins after uninstall: %v, want the 4 applied", got)
	}
	// Nothing serves them now, and their status says so (the uninstall hook stopped the hosts while the
	// controller still ran): no stale Ready=True for kubectl wait, Flux or Argo CD to trust.
	ready := k.Kubectl(t, "get", "wasmplugins", "-A", "-o",
		`jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status}/{.status.conditions[?(@.type=="Ready")].reason} {end}`)
	for _, p := range strings.Fields(ready) {
		if !strings.HasSuffix(p, "=False/"+wasmv1.ReasonNoHosts) {
			t.Errorf("after uninstall, plugin Ready: %s, want False/%s", p, wasmv1.ReasonNoHosts)
		}
	}
	for _, obj := range objects(manifest) {
		if obj.kind == "CustomResourceDefinition" {
			continue
		}
		args := []string{"get", obj.kind, obj.name, "--ignore-not-found", "-o", "name"}
		if obj.namespaced {
			args = append(args, "-n", namespace)
		}
		if out := strings.TrimSpace(k.Kubectl(t, args...)); out != "" {
			t.Errorf("%s %s still there after helm uninstall", obj.kind, obj.name)
		}
	}
	// The hook's Job goes when it succeeded; the garbage collector takes its pod just after.
	Eventually(t, time.Minute, "no pod left", func() error {
		if out := strings.TrimSpace(k.Kubectl(t, "get", "pods", "-n", namespace, "-o", "name")); out != "" {
			return fmt.Errorf("pods after uninstall: %s", out)
		}
		return nil
	})
	step("done")
}

// hostPods returns the names of the host pods that are not terminating.
func hostPods(t *testing.T) []string {
	t.Helper()
	out := k.Kubectl(t, "get", "pods", "-n", namespace, "-l", hostLabel, "-o",
		`jsonpath={range .items[*]}{.metadata.name} {.metadata.deletionTimestamp}{"\n"}{end}`)
	var pods []string
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) == 1 {
			pods = append(pods, f[0])
		}
	}
	return pods
}

type object struct {
	kind, name string
	namespaced bool
}

// objects lists the kind and name of each object of a helm manifest.
func objects(manifest string) []object {
	var out []object
	for _, doc := range strings.Split(manifest, "\n---") {
		var o object
		inMeta := false
		for _, line := range strings.Split(doc, "\n") {
			switch {
			case strings.HasPrefix(line, "kind: "):
				o.kind = strings.TrimPrefix(line, "kind: ")
			case line == "metadata:":
				inMeta = true
			case inMeta && strings.HasPrefix(line, "  name: ") && o.name == "":
				o.name = strings.TrimPrefix(line, "  name: ")
			case inMeta && strings.HasPrefix(line, "  namespace: "):
				o.namespaced = true
			case len(line) > 0 && line[0] != ' ' && line != "metadata:":
				inMeta = false
			}
		}
		if o.kind != "" && o.name != "" {
			out = append(out, o)
		}
	}
	return out
}

// grepLines returns the lines of s containing substr.
func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
