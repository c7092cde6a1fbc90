// Package devstack runs the whole operator on one machine: the test control plane (a real kube-apiserver
// and etcd built by hack/), the CRD, `manager controller` and any number of `manager host` processes
// standing for nodes, all sharing one cache folder, and a file server for the example plugins. `make dev`
// runs it for people; the e2e tests run it for assertions.
package devstack

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	wasmv1 "github.com/wasm-operator/wasm-operator/api/v1alpha1"
	"github.com/wasm-operator/wasm-operator/internal/certs"
	"github.com/wasm-operator/wasm-operator/internal/hostapi"
	"github.com/wasm-operator/wasm-operator/internal/testenv"
	"github.com/wasm-operator/wasm-operator/internal/testplugins"
)

// Namespace is the operator's namespace in the stack: host Leases and the leader election Lease.
const Namespace = "wasm-operator-system"

// Options configure a Stack.
type Options struct {
	// Dir holds the stack's files: the kubeconfig, the cache, the logs. Required.
	Dir string
	// Log receives the processes' output, each line prefixed with the process name. Nil discards it;
	// the lines are kept in <Dir>/<name>.log in any case.
	Log io.Writer
	// ControllerArgs are added to `manager controller`.
	ControllerArgs []string
}

// Stack is a running local operator.
type Stack struct {
	opts Options
	env  *envtest.Environment
	// Config reaches the API server as a cluster admin.
	Config *rest.Config
	// Client talks to the API server directly (no cache).
	Client client.Client
	// Kubeconfig is the path of a kubeconfig file for kubectl and the processes.
	Kubeconfig string
	// CacheDir is the shared module cache of the controller and every host.
	CacheDir string
	// Manager is the path of the manager binary the processes run.
	Manager string
	// PluginsURL serves the example plugins as <PluginsURL>/<name>.wasm.
	PluginsURL string
	// HostCA signed the hosts' serving certificate (for 127.0.0.1 and localhost): callers trust it.
	HostCA            *certs.CA
	hostCert, hostKey string

	files *http.Server
	mu    sync.Mutex
	// signer, when set, makes the controller sign the hosts' certificates (UseHostSigner).
	signer *HostSigner
	procs  map[string]*Process
	// kubeconfigs are per-process kubeconfigs set with RunAs; processes without one use Kubeconfig.
	kubeconfigs map[string]string
}

// Process is one `manager` subcommand running as its own process.
type Process struct {
	Name string
	Args []string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Start starts the control plane, installs the CRD, builds the manager and the example plugins and serves
// them. It starts no manager process: see StartController and StartHost.
func Start(ctx context.Context, opts Options) (_ *Stack, err error) {
	if opts.Dir == "" {
		return nil, errors.New("devstack: Options.Dir is required")
	}
	s := &Stack{opts: opts, procs: map[string]*Process{}, kubeconfigs: map[string]string{}, CacheDir: filepath.Join(opts.Dir, "cache")}
	defer func() {
		if err != nil {
			s.Stop()
		}
	}()
	if err := os.MkdirAll(s.CacheDir, 0o755); err != nil {
		return nil, err
	}
	root := testenv.RepoRoot()
	s.Manager = filepath.Join(opts.Dir, "manager")
	build := exec.CommandContext(ctx, "go", "build", "-o", s.Manager, "./cmd/manager")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build the manager: %v\n%s", err, out)
	}
	pluginsDir := filepath.Join(opts.Dir, "plugins")
	names, err := testplugins.Names()
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		if _, err := testplugins.BuildTo(pluginsDir, n); err != nil {
			return nil, fmt.Errorf("build plugin %s: %w", n, err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.PluginsURL = "http://" + ln.Addr().String()
	s.files = &http.Server{Handler: http.FileServer(http.Dir(pluginsDir)), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = s.files.Serve(ln) }()

	if err := s.makeHostCert(); err != nil {
		return nil, err
	}
	if s.env, s.Config, err = testenv.Start(); err != nil {
		return nil, err
	}
	scheme := k8sruntime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = wasmv1.AddToScheme(scheme)
	if s.Client, err = client.New(s.Config, client.Options{Scheme: scheme}); err != nil {
		return nil, err
	}
	admin, err := s.env.AddUser(envtest.User{Name: "dev-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return nil, fmt.Errorf("add the admin user: %w", err)
	}
	kc, err := admin.KubeConfig()
	if err != nil {
		return nil, err
	}
	s.Kubeconfig = filepath.Join(opts.Dir, "kubeconfig")
	if err := os.WriteFile(s.Kubeconfig, kc, 0o600); err != nil {
		return nil, err
	}
	if err := s.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: Namespace}}); err != nil {
		return nil, fmt.Errorf("create namespace %s: %w", Namespace, err)
	}
	// What the chart grants callers (create on wasmplugins/call) and metrics scrapers (get /metrics).
	for _, role := range []*rbacv1.ClusterRole{
		{ObjectMeta: metav1.ObjectMeta{Name: "wasm-operator-caller"},
			Rules: []rbacv1.PolicyRule{{APIGroups: []string{wasmv1.GroupVersion.Group}, Resources: []string{"wasmplugins/call"}, Verbs: []string{"create"}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "wasm-operator-metrics-reader"},
			Rules: []rbacv1.PolicyRule{{NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}}}},
	} {
		if err := s.Client.Create(ctx, role); err != nil && !apierrors.IsAlreadyExists(err) {
			return nil, err
		}
	}
	return s, nil
}

// AddNode creates a Node object with labels, as a kubelet would register it; hosts match placement
// against it.
func (s *Stack) AddNode(ctx context.Context, name string, labels map[string]string) error {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	if err := s.Client.Create(ctx, n); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create node %s: %w", name, err)
	}
	return nil
}

// StartController starts `manager controller`. It calls the hosts for Cluster schedules as the chart's
// controller does: trusting HostCA, with a token of the hosts' audience for a ServiceAccount allowed to call
// plugins in every namespace.
func (s *Stack) StartController() (*Process, error) {
	token, err := s.controllerToken()
	if err != nil {
		return nil, err
	}
	args := []string{"controller", "--cache-dir", s.CacheDir, "--namespace", Namespace,
		"--metrics-bind-address", "0", "--health-probe-bind-address", "0", "--leader-elect=true",
		"--host-token-file", token, "--dev-allow-loopback-sources"} // the file server is on loopback
	if signer := s.hostSigner(); signer != nil {
		args = append(args, signer.ControllerArgs...)
	} else {
		args = append(args, "--host-ca-file", filepath.Join(s.opts.Dir, "host-ca.crt"))
	}
	return s.start("controller", append(args, s.opts.ControllerArgs...)...)
}

// controllerToken writes a token of the hosts' audience for the ServiceAccount wasm-operator-controller of
// the stack's namespace, bound to the caller role cluster-wide, and returns the file's path.
func (s *Stack) controllerToken() (string, error) {
	ctx := context.Background()
	const name = "wasm-operator-controller"
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: Namespace}}
	if err := s.Client.Create(ctx, sa); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", err
	}
	crb := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name + "-calls"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "wasm-operator-caller"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: name, Namespace: Namespace}}}
	if err := s.Client.Create(ctx, crb); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", err
	}
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		Audiences: []string{hostapi.DefaultAudience}, ExpirationSeconds: ptr.To(int64(24 * 3600))}}
	if err := s.Client.SubResource("token").Create(ctx, sa, tr); err != nil {
		return "", fmt.Errorf("token for the controller's calls to hosts: %w", err)
	}
	path := filepath.Join(s.opts.Dir, "controller-host-token")
	return path, os.WriteFile(path, []byte(tr.Status.Token), 0o600)
}

// StartHost starts `manager host` for a node with its call API on listen (a host:port; FreePort finds one),
// with extra arguments such as --auth=false. With authentication on, the call API speaks HTTPS with a
// certificate of HostCA.
func (s *Stack) StartHost(node, listen string, extra ...string) (*Process, error) {
	// Each host compiles what the shared cache lacks into a folder of its own, as on a node.
	args := []string{"host", "--node-name", node, "--cache-dir", s.CacheDir, "--namespace", Namespace, "--listen", listen,
		"--compile-cache-dir", filepath.Join(s.opts.Dir, "local-"+node), "--state-dir", filepath.Join(s.opts.Dir, "state-"+node)}
	if signer := s.hostSigner(); signer != nil && !slices.Contains(extra, "--auth=false") {
		args = append(append(args, signer.HostArgs...), "--advertise-url", "https://"+listen)
	} else if !slices.Contains(extra, "--auth=false") {
		args = append(args, "--tls-cert-file", s.hostCert, "--tls-key-file", s.hostKey, "--advertise-url", "https://"+listen)
	} else {
		args = append(args, "--advertise-url", "http://"+listen)
	}
	return s.start("host-"+node, append(args, extra...)...)
}

// HostSigner makes the controller sign each host's own serving certificate, with the arguments the chart
// gives the controller and the hosts (modes generate and certManager of host.tls).
type HostSigner struct {
	// ControllerArgs are the controller's --host-signer-name, --host-ca-secret... ; HostArgs the hosts'
	// --tls-signer-name, --tls-dns-names...
	ControllerArgs, HostArgs []string
	// ServerName is the name callers check (the host Service's), although they dial 127.0.0.1.
	ServerName string
	// CAConfigMap is the ConfigMap of Namespace where the controller publishes the bundle callers trust.
	CAConfigMap string
}

// UseHostSigner makes the controller and hosts started from now on run as h says. The hosts must act
// as the ServiceAccount the controller signs for, with a node claim (RunAs).
func (s *Stack) UseHostSigner(h HostSigner) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.signer = &h
}

// HostSigned reports whether the controller signs the hosts' certificates (UseHostSigner).
func (s *Stack) HostSigned() bool { return s.hostSigner() != nil }

func (s *Stack) hostSigner() *HostSigner {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.signer
}

// HostClient returns an HTTP client for the hosts' call API: HTTPS, trusting what a caller pod trusts,
// HostCA or, with UseHostSigner, the bundle the controller publishes (read at each connection) for the
// Service's name. Callers also need a token of audience hostapi.DefaultAudience.
func (s *Stack) HostClient() *http.Client {
	verify := func(cs tls.ConnectionState) error {
		roots, name := s.HostCA.Pool(), cs.ServerName
		if signer := s.hostSigner(); signer != nil {
			cm := &corev1.ConfigMap{}
			if err := s.Client.Get(context.Background(), client.ObjectKey{Namespace: Namespace, Name: signer.CAConfigMap}, cm); err != nil {
				return fmt.Errorf("the hosts' CA bundle: %w", err)
			}
			roots, name = x509.NewCertPool(), signer.ServerName
			if !roots.AppendCertsFromPEM([]byte(cm.Data["ca.crt"])) {
				return fmt.Errorf("the hosts' CA bundle ConfigMap %s holds no certificate", signer.CAConfigMap)
			}
		}
		return certs.VerifyChain(cs.PeerCertificates, roots, name)
	}
	return &http.Client{Timeout: 30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12,
			InsecureSkipVerify: true, VerifyConnection: verify}}} // verified by verify, as crypto/tls would
}

// makeHostCert makes HostCA and the hosts' serving certificate in the stack's folder.
func (s *Stack) makeHostCert() error {
	ca, err := certs.NewCA("devstack-host-ca")
	if err != nil {
		return err
	}
	c, k, err := ca.Issue("wasm-operator-host", []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return err
	}
	s.HostCA, s.hostCert, s.hostKey = ca, filepath.Join(s.opts.Dir, "host-tls.crt"), filepath.Join(s.opts.Dir, "host-tls.key")
	if err := os.WriteFile(s.hostCert, c, 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(s.opts.Dir, "host-ca.crt"), ca.PEM, 0o600); err != nil {
		return err
	}
	return os.WriteFile(s.hostKey, k, 0o600)
}

func (s *Stack) start(name string, args ...string) (*Process, error) {
	logf, err := os.OpenFile(filepath.Join(s.opts.Dir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(s.Manager, args...)
	s.mu.Lock()
	kubeconfig, ok := s.kubeconfigs[name]
	s.mu.Unlock()
	if !ok {
		kubeconfig = s.Kubeconfig
	}
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig, "POD_NAMESPACE="+Namespace)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Process{Name: name, Args: args, cmd: cmd, done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			fmt.Fprintln(logf, sc.Text())
			if s.opts.Log != nil {
				fmt.Fprintf(s.opts.Log, "[%s] %s\n", name, sc.Text())
			}
		}
		// A line too long to scan: keep the rest as it comes, so the process never blocks on its output.
		_, _ = io.Copy(logf, pr)
		logf.Close()
	}()
	go func() {
		p.err = cmd.Wait()
		pw.Close()
		close(p.done)
	}()
	s.mu.Lock()
	s.procs[name] = p
	s.mu.Unlock()
	return p, nil
}

// Stop asks the process to stop (SIGTERM, as the kubelet does) and waits up to timeout, then kills it.
func (p *Process) Stop(timeout time.Duration) error {
	select {
	case <-p.done:
		return p.err
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
		return fmt.Errorf("%s did not stop within %s and was killed", p.Name, timeout)
	}
}

// PID is the process's id, for reading its resource use from /proc.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Kill stops the process at once, as a crashed node would: nothing is cleaned up.
func (p *Process) Kill() {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// Exited reports whether the process ended, and its error.
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// RunAs makes the process name ("controller" or "host-<node>") reach the API server as user with groups
// and user extra (such as the node-name claim of a pod-bound token), through impersonation by the admin,
// so that only the RBAC and admission policies bound to that user apply to it, as in a cluster where it
// runs under its ServiceAccount.
func (s *Stack) RunAs(name, user string, groups []string, extra map[string][]string) error {
	cfg, err := clientcmd.LoadFromFile(s.Kubeconfig)
	if err != nil {
		return fmt.Errorf("read the admin kubeconfig: %w", err)
	}
	for _, a := range cfg.AuthInfos {
		a.Impersonate, a.ImpersonateGroups, a.ImpersonateUserExtra = user, groups, extra
	}
	path := filepath.Join(s.opts.Dir, name+".kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return err
	}
	s.mu.Lock()
	s.kubeconfigs[name] = path
	s.mu.Unlock()
	return nil
}

// LogPath is where the stack keeps a process's output.
func (s *Stack) LogPath(name string) string { return filepath.Join(s.opts.Dir, name+".log") }

// Stop stops every process, the file server and the control plane.
func (s *Stack) Stop() {
	s.mu.Lock()
	procs := make([]*Process, 0, len(s.procs))
	for _, p := range s.procs {
		procs = append(procs, p)
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Add(1)
		go func() { defer wg.Done(); _ = p.Stop(15 * time.Second) }()
	}
	wg.Wait()
	if s.files != nil {
		_ = s.files.Close()
	}
	if s.env != nil {
		_ = s.env.Stop()
	}
}

// FreePort returns a loopback address with a port free at the time of the call.
func FreePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
