//go:build cluster

package cluster

import (
	"fmt"
	"strings"
	"testing"
)

// CallerImage is the image of test/cluster/caller, which the test builds and imports.
const CallerImage = "localhost/wasm-operator-caller:test"

// Caller is a pod that calls plugins as an application does: in a namespace of its own, as its own
// ServiceAccount, with a projected token of the hosts' audience, over HTTPS trusting the CA the chart
// publishes (docs/calling-plugins.md). The call API's scheme, the token's audience and what the caller
// trusts live here only, so that a change of the serving side is a change of this file.
type Caller struct {
	Namespace, ServiceAccount, Pod string
	// CA is the PEM the caller trusts: ca.crt of the chart's <release>-host-ca ConfigMap.
	CA string
	// ServerName is the name the hosts' certificate is checked against: the host Service's DNS name
	// (the cluster has no DNS, so the caller dials the Service's IP and verifies this name).
	ServerName string
}

const (
	// TokenPath is where the caller pod's projected token of the hosts' audience is mounted.
	TokenPath = "/var/run/secrets/wasm-operator/token"
	// APIServerTokenPath is a second projected token, of the API server's audience, which the hosts
	// must refuse: a host never sees a token it could replay against the API server.
	APIServerTokenPath = "/var/run/secrets/wasm-operator/api-token"
	// tokenAudience is the audience hosts accept by default (host.tokenAudiences).
	tokenAudience = "wasm-operator"
	// callScheme is how callers reach the hosts: TLS, as the chart serves the call API.
	callScheme = "https"
	caPath     = "/var/run/wasm-operator-ca/ca.crt"
)

// Manifest returns the caller's Namespace, ServiceAccount, CA ConfigMap and Pod.
func (c Caller) Manifest() string {
	ca := "    " + strings.ReplaceAll(strings.TrimSpace(c.CA), "\n", "\n    ")
	return fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata: {name: %[1]s}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: host-ca, namespace: %[1]s}
data:
  ca.crt: |
%[6]s
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: %[2]s, namespace: %[1]s}
automountServiceAccountToken: false
---
apiVersion: v1
kind: Pod
metadata: {name: %[3]s, namespace: %[1]s}
spec:
  serviceAccountName: %[2]s
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  securityContext: {runAsNonRoot: true, runAsUser: 65532, seccompProfile: {type: RuntimeDefault}}
  containers:
    - name: caller
      image: %[4]s
      imagePullPolicy: Never
      args: [sleep]
      securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
      volumeMounts:
        - {name: token, mountPath: /var/run/secrets/wasm-operator, readOnly: true}
        - {name: ca, mountPath: /var/run/wasm-operator-ca, readOnly: true}
  volumes:
    - name: token
      projected:
        sources:
          - serviceAccountToken:
              path: token
              expirationSeconds: 3600
              audience: %[5]s
          - serviceAccountToken:
              path: api-token
              expirationSeconds: 3600
    - name: ca
      configMap: {name: host-ca}
`, c.Namespace, c.ServiceAccount, c.Pod, CallerImage, tokenAudience, ca)
}

// URL is the call API address of function of the plugin ns/name through the host Service at serviceIP:port.
func URL(serviceIP string, port int, ns, name, function string) string {
	return fmt.Sprintf("%s://%s:%d/v1/namespaces/%s/wasmplugins/%s/call/%s", callScheme, serviceIP, port, ns, name, function)
}

// Command returns the kubectl arguments that run the caller in mode ("once" or "loop") on url with input.
func (c Caller) Command(mode, url, input string) []string {
	return c.command(mode, url, input, TokenPath)
}

func (c Caller) command(mode, url, input, token string) []string {
	args := []string{"exec", "-n", c.Namespace, c.Pod}
	if mode == "loop" {
		args = append(args, "-i") // the loop runs until its stdin closes
	}
	return append(args, "--", "/caller", mode, "-url", url, "-token", token, "-data", input,
		"-ca", caPath, "-server-name", c.ServerName)
}

// Call calls url once with input and returns the status code and the body.
func (c Caller) Call(t testing.TB, k *Cluster, url, input string) (int, string) {
	t.Helper()
	return c.CallWithToken(t, k, url, input, TokenPath)
}

// CallWithToken is Call with the token mounted at token in the caller pod.
func (c Caller) CallWithToken(t testing.TB, k *Cluster, url, input, token string) (int, string) {
	t.Helper()
	out, _ := k.run("", k.Bin+"/kubectl", c.command("once", url, input, token)...)
	code, body, _ := strings.Cut(out, "\n")
	var n int
	fmt.Sscan(code, &n)
	return n, body
}
