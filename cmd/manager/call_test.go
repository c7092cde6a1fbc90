package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	extism "github.com/extism/go-sdk"

	"github.com/wasm-operator/wasm-operator/internal/testplugins"
)

// managerBin is the manager binary the tests run as a real process.
var managerBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "manager-call-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	managerBin = filepath.Join(dir, "manager")
	build := exec.Command("go", "build", "-o", managerBin, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build manager:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func sdkWasm(t *testing.T, name string) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/extism/go-sdk").Output()
	if err != nil {
		t.Fatalf("locate the Extism Go SDK: %v", err)
	}
	return filepath.Join(strings.TrimSpace(string(out)), "wasm", name)
}

// runManager runs the binary and returns its stdout, stderr and exit code.
func runManager(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(managerBin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("run manager: %v", err)
	}
	return stdout.String(), stderr.String(), cmd.ProcessState.ExitCode()
}

// TestCallCountVowels: manager call prints what the Extism Go SDK returns for its count_vowels.
func TestCallCountVowels(t *testing.T) {
	wasm := sdkWasm(t, "count_vowels.wasm")
	ctx := context.Background()
	p, err := extism.NewPlugin(ctx, extism.Manifest{Wasm: []extism.Wasm{extism.WasmFile{Path: wasm}}},
		extism.PluginConfig{EnableWasi: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(ctx)
	rc, want, err := p.Call("count_vowels", []byte("Hello, World!"))
	if err != nil || rc != 0 {
		t.Fatalf("sdk: %d %v", rc, err)
	}

	stdout, stderr, code := runManager(t, "", "call", "--input", "Hello, World!", wasm, "count_vowels")
	if stdout != string(want) || code != 0 || stderr != "" {
		t.Fatalf("stdout %q (sdk %q), stderr %q, exit %d", stdout, want, stderr, code)
	}
}

func TestCall(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "fetched")
	}))
	defer srv.Close()
	inputFile := filepath.Join(t.TempDir(), "input.txt")
	if err := os.WriteFile(inputFile, []byte("from a file"), 0o644); err != nil {
		t.Fatal(err)
	}
	greet := testplugins.Build(t, "greet")
	fetch := testplugins.Build(t, "http-fetch")
	cases := []struct {
		name           string
		stdin          string
		args           []string
		stdout, stderr string // stderr: a substring
		code           int
	}{
		{name: "config and input", args: []string{"--config", "greeting=Howdy", "--input", "John", greet, "greet"},
			stdout: "Howdy, John!"},
		{name: "stdin", stdin: "piped", args: []string{"--stdin", greet, "greet"}, stdout: "Hello, piped!"},
		{name: "input file", args: []string{"--input-file", inputFile, greet, "greet"}, stdout: "Hello, from a file!"},
		{name: "plugin error", args: []string{sdkWasm(t, "fail.wasm"), "run_test"}, stderr: "Some error message\n", code: 1},
		{name: "exit code", args: []string{"--config", "code=42", sdkWasm(t, "exit.wasm"), "_start"},
			stderr: "module closed with exit_code(42)", code: 42},
		{name: "timeout", args: []string{"--timeout", "100ms", "--config", "duration=3", sdkWasm(t, "sleep.wasm"), "run_test"},
			stderr: "module closed with context deadline exceeded", code: 255},
		{name: "http allowed", args: []string{"--allow-host", "127.0.0.1", "--allow-private-networks", fetch, "fetch", "--input", srv.URL}},
		{name: "http refused", args: []string{"--allow-host", "127.0.0.1", "--input", srv.URL, fetch, "fetch"},
			stderr: "private or cluster-internal address", code: 1},
		{name: "memory limit", args: []string{"--memory-max", "1Mi", sdkWasm(t, "count_vowels.wasm"), "count_vowels"},
			stderr: "manager call: load plugin", code: 1},
		{name: "log level", args: []string{"--log-level", "debug", "--allow-host", "example.com", "--input", "http://example.com/", fetch, "fetch"},
			stderr: `"msg"="fetching http://example.com/"`, code: 1},
		{name: "unknown function", args: []string{greet, "nope"}, stderr: "unknown function: nope", code: 1},
		{name: "missing module", args: []string{"/nonexistent.wasm", "run"}, stderr: "manager call: read module", code: 1},
		{name: "usage", args: []string{greet}, stderr: "usage: manager call", code: 2},
		{name: "two inputs", args: []string{"--input", "a", "--stdin", greet, "greet"}, stderr: "at most one of", code: 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			stdout, stderr, code := runManager(t, c.stdin, append([]string{"call"}, c.args...)...)
			if c.name == "http allowed" {
				c.stdout = "fetched"
			}
			if stdout != c.stdout || code != c.code || !strings.Contains(stderr, c.stderr) || (c.stderr == "" && stderr != "") {
				t.Errorf("stdout %q, stderr %q, exit %d; want stdout %q, stderr containing %q, exit %d",
					stdout, stderr, code, c.stdout, c.stderr, c.code)
			}
		})
	}
}

// TestCallKV: --kv grants an in-memory store for the run; --kv-file keeps it between runs in a file a
// person can read and edit.
func TestCallKV(t *testing.T) {
	wasm := testplugins.Build(t, "shared-counter")
	file := filepath.Join(t.TempDir(), "kv.json")
	for _, c := range []struct {
		name       string
		args       []string
		out, inErr string
		code       int
	}{
		{"not granted", []string{"call", wasm, "increment"}, "", "import extism:host/user.kv_get needs permissions.kv", 1},
		{"in memory", []string{"call", "--kv", wasm, "increment"}, "1", "", 0},
		{"in memory again starts afresh", []string{"call", "--kv", wasm, "increment"}, "1", "", 0},
		{"file, first run", []string{"call", "--kv-file", file, wasm, "increment"}, "1", "", 0},
		{"file, second run", []string{"call", wasm, "increment", "--kv-file", file}, "2", "", 0},
		{"file, binary value", []string{"call", "--kv-file", file, "--input", "\xff\xfe", wasm, "remember"}, "", "", 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, errOut, code := runManager(t, "", c.args...)
			if out != c.out || code != c.code || !strings.Contains(errOut, c.inErr) {
				t.Fatalf("manager %s = %q, exit %d, stderr %q; want %q, exit %d, stderr with %q",
					strings.Join(c.args, " "), out, code, errOut, c.out, c.code, c.inErr)
			}
		})
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"counter/count": {`, `"value": "2"`, `"note": {`, `"base64": "//4="`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("kv file lacks %s:\n%s", want, b)
		}
	}

	// An edited file is read back; a broken one is refused with what is wrong.
	os.WriteFile(file, []byte(`{"counter/count": {"value": "41"}}`), 0o644)
	if out, errOut, code := runManager(t, "", "call", "--kv-file", file, wasm, "increment"); out != "42" || code != 0 {
		t.Fatalf("after editing the file: %q, exit %d, %s", out, code, errOut)
	}
	os.WriteFile(file, []byte(`{"k": {"value": "a", "base64": "YQ=="}}`), 0o644)
	if _, errOut, code := runManager(t, "", "call", "--kv-file", file, wasm, "get"); code != 1 ||
		!strings.Contains(errOut, `key "k": give exactly one of "value" and "base64"`) {
		t.Fatalf("broken file: exit %d, %s", code, errOut)
	}
}
