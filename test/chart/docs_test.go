package chart

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestInstallDocsHealthCheck checks that the Argo CD snippet in docs/install.md holds the tested script.
func TestInstallDocsHealthCheck(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(RepoRoot(), "docs", "install.md"))
	if err != nil {
		t.Fatal(err)
	}
	const key = "resource.customizations.health.wasm-operator.dev_WasmPlugin"
	for _, block := range regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllSubmatch(doc, -1) {
		if !strings.Contains(string(block[1]), key) {
			continue
		}
		var cm struct{ Data map[string]string }
		if err := yaml.Unmarshal(block[1], &cm); err != nil {
			t.Fatalf("the argocd-cm snippet is not YAML: %v", err)
		}
		if cm.Data[key] != healthScript(t) {
			t.Errorf("docs/install.md's %s differs from charts/wasm-operator/health/argocd.lua; paste the script again", key)
		}
		return
	}
	t.Fatalf("docs/install.md has no argocd-cm snippet with %s", key)
}

// TestDockerfile checks that the image builds what `make build` builds: every package of the repository
// that cmd/manager imports is copied into the build stage and let through the build context, and the binary
// is static and runs as the non-root user.
func TestDockerfile(t *testing.T) {
	root := RepoRoot()
	dockerfile, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	ignore, err := os.ReadFile(filepath.Join(root, "Dockerfile.dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.Dir}}{{end}}", "./cmd/manager")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dir := range strings.Fields(string(out)) {
		rel, err := filepath.Rel(root, dir)
		if err != nil || strings.HasPrefix(rel, "..") {
			continue // a dependency outside the repository
		}
		top := strings.Split(filepath.ToSlash(rel), "/")[0] + "/"
		if !strings.Contains(string(dockerfile), "COPY "+top+" "+top) {
			t.Errorf("Dockerfile does not copy %s, which cmd/manager imports (%s)", top, rel)
		}
		if !strings.Contains(string(ignore), "\n!"+top+"\n") {
			t.Errorf("Dockerfile.dockerignore keeps %s out of the build context", top)
		}
	}
	for _, want := range []string{"FROM --platform=$BUILDPLATFORM golang:1.26 AS build", "CGO_ENABLED=0", "-trimpath",
		"FROM gcr.io/distroless/static:nonroot", "USER 65532:65532", `ENTRYPOINT ["/manager"]`} {
		if !strings.Contains(string(dockerfile), want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
}
