package main

import (
	"bytes"
	"context"
	"os"
	"testing"

	extism "github.com/extism/go-sdk"

	"github.com/wasm-operator/wasm-operator/runtime"
)

// TestShout runs the module on this project's runtime and on the Extism Go SDK side by side: the same
// outputs, and a size that fits a ConfigMap with room to spare.
func TestShout(t *testing.T) {
	wasm := Module()
	if len(wasm) > 1024 {
		t.Errorf("shout.wasm is %d bytes; it is meant to stay tiny", len(wasm))
	}
	ctx := context.Background()
	eng, err := runtime.NewEngine(ctx, runtime.EngineConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close(ctx)
	p, err := eng.Load(ctx, wasm, runtime.PluginConfig{Name: "default/shout"})
	if err != nil {
		t.Fatal(err)
	}
	inst, err := p.NewInstance(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Close(ctx)
	sdk, err := extism.NewPlugin(ctx, extism.Manifest{Wasm: []extism.Wasm{extism.WasmData{Data: wasm}}}, extism.PluginConfig{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sdk.Close(ctx)
	for _, tc := range []struct{ in, want string }{
		{"Hello, world", "HELLO, WORLD"}, {"", ""}, {"az AZ `{ 09 é", "AZ AZ `{ 09 é"},
	} {
		out, rc, err := inst.Call(ctx, "shout", []byte(tc.in))
		if err != nil || rc != 0 || string(out) != tc.want {
			t.Errorf("runtime: shout(%q) = %q, %d, %v; want %q", tc.in, out, rc, err, tc.want)
		}
		src, sout, err := sdk.Call("shout", []byte(tc.in))
		if err != nil || src != 0 || string(sout) != tc.want {
			t.Errorf("Extism SDK: shout(%q) = %q, %d, %v; want %q", tc.in, sout, src, err, tc.want)
		}
	}
}

// TestCommitted: examples/shout/shout.wasm, which users put in a ConfigMap straight from a checkout, is what
// Module assembles.
func TestCommitted(t *testing.T) {
	b, err := os.ReadFile("shout.wasm")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, Module()) {
		t.Error("shout.wasm differs from Module(): run 'go run ./examples/shout -o examples/shout/shout.wasm'")
	}
}
