package testplugins_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	extism "github.com/extism/go-sdk"
	"github.com/tetratelabs/wazero"

	"github.com/wasm-operator/wasm-operator/internal/testplugins"
)

// TestSharedCounterUnderSDK: the pdk's kv helpers are ordinary Extism user host function imports. Under the
// Extism Go SDK, with kv_get, kv_set, kv_delete and kv_list written as any SDK host would write them (over a
// map), the example plugin works: the signatures and the memory-handle convention are Extism's.
func TestSharedCounterUnderSDK(t *testing.T) {
	ctx := context.Background()
	store := map[string][]byte{}
	read := func(p *extism.CurrentPlugin, h uint64) string {
		b, err := p.ReadBytes(h)
		if err != nil {
			t.Errorf("read block %d: %v", h, err)
		}
		return string(b)
	}
	write := func(p *extism.CurrentPlugin, b []byte) uint64 {
		h, err := p.WriteBytes(b)
		if err != nil {
			t.Errorf("write block: %v", err)
		}
		return h
	}
	i64 := []extism.ValueType{extism.ValueTypeI64}
	funcs := []extism.HostFunction{
		extism.NewHostFunctionWithStack("kv_get", func(_ context.Context, p *extism.CurrentPlugin, s []uint64) {
			v, ok := store[read(p, s[0])]
			s[0] = 0
			if ok {
				s[0] = write(p, v)
			}
		}, i64, i64),
		extism.NewHostFunctionWithStack("kv_set", func(_ context.Context, p *extism.CurrentPlugin, s []uint64) {
			k := read(p, s[0])
			if s[1] == 0 {
				delete(store, k)
				return
			}
			store[k] = []byte(read(p, s[1]))
		}, []extism.ValueType{extism.ValueTypeI64, extism.ValueTypeI64, extism.ValueTypeI64}, nil),
		extism.NewHostFunctionWithStack("kv_delete", func(_ context.Context, p *extism.CurrentPlugin, s []uint64) {
			delete(store, read(p, s[0]))
		}, i64, nil),
		extism.NewHostFunctionWithStack("kv_list", func(_ context.Context, p *extism.CurrentPlugin, s []uint64) {
			prefix := ""
			if s[0] != 0 {
				prefix = read(p, s[0])
			}
			var keys []string
			for k := range store {
				if strings.HasPrefix(k, prefix) {
					keys = append(keys, k)
				}
			}
			slices.Sort(keys)
			b, _ := json.Marshal(keys)
			s[0] = write(p, b)
		}, i64, i64),
	}
	manifest := extism.Manifest{Wasm: []extism.Wasm{extism.WasmFile{Path: testplugins.Build(t, "shared-counter")}}}
	compiled, err := extism.NewCompiledPlugin(ctx, manifest, extism.PluginConfig{
		EnableWasi:    true,
		RuntimeConfig: wazero.NewRuntimeConfig().WithCompilationCache(compilationCache),
	}, funcs)
	if err != nil {
		t.Fatal(err)
	}
	defer compiled.Close(ctx)
	p, err := compiled.Instance(ctx, extism.PluginInstanceConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(ctx)
	for _, c := range []struct{ fn, input, want string }{
		{"increment", "", "1"},
		{"increment", "", "2"},
		{"increment", "hits", "1"},
		{"get", "", "2"},
		{"counters", "", `["count","hits"]`},
		{"reset", "", "0"},
		{"get", "", "0"},
		{"remember", "a note", ""},
		{"recall", "", "a note"},
	} {
		rc, out, err := p.Call(c.fn, []byte(c.input))
		if rc != 0 || err != nil || string(out) != c.want {
			t.Fatalf("%s(%q) under the Extism Go SDK = rc %d, %q, %v; want %q", c.fn, c.input, rc, out, err, c.want)
		}
	}
	if string(store["counter/hits"]) != "1" {
		t.Fatalf("store = %q", store)
	}
}
