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
// ServiceAccount, with a projected token. The call API's scheme, the token's audience and what the caller
// trusts live here only, so that a change of the serving side is a change of this file.
type Caller struct {
	Namespace, ServiceAccount, Pod string
}

const (
	// tokenPath is where the caller pod's projected token is mounted.
	tokenPath = "/var/run/secrets/wasm-operator/token"
	// tokenAudience is the token's audience: empty, the API server's, which the hosts accept by default.
	tokenAudience = ""
	// callScheme is how callers reach the hosts.
	callScheme = "http"
)

// Manifest returns the caller's Namespace, ServiceAccount and Pod.
func (c Caller) Manifest() string {
	audience := ""
	if tokenAudience != "" {
		audience = "\n                audience: " + tokenAudience
	}
	return fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata: {name: %[1]s}
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
  volumes:
    - name: token
      projected:
        sources:
          - serviceAccountToken:
              path: token
              expirationSeconds: 3600%[5]s
`, c.Namespace, c.ServiceAccount, c.Pod, CallerImage, audience)
}

// URL is the call API address of function of the plugin ns/name through the host Service at serviceIP:port.
func URL(serviceIP string, port int, ns, name, function string) string {
	return fmt.Sprintf("%s://%s:%d/v1/namespaces/%s/wasmplugins/%s/call/%s", callScheme, serviceIP, port, ns, name, function)
}

// Command returns the kubectl arguments that run the caller in mode ("once" or "loop") on url with input.
func (c Caller) Command(mode, url, input string) []string {
	args := []string{"exec", "-n", c.Namespace, c.Pod}
	if mode == "loop" {
		args = append(args, "-i") // the loop runs until its stdin closes
	}
	return append(args, "--", "/caller", mode, "-url", url, "-token", tokenPath, "-data", input)
}

// Call calls url once with input and returns the status code and the body.
func (c Caller) Call(t testing.TB, k *Cluster, url, input string) (int, string) {
	t.Helper()
	out, _ := k.run("", k.Bin+"/kubectl", c.Command("once", url, input)...)
	code, body, _ := strings.Cut(out, "\n")
	var n int
	fmt.Sscan(code, &n)
	return n, body
}
