package runtime

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	extism "github.com/extism/go-sdk"

	"github.com/wasm-operator/wasm-operator/internal/testplugins"
	wb "github.com/wasm-operator/wasm-operator/internal/wasmbuild"
)

// Hand-made hostile modules, one per way a guest could take what its limits do not give it.

var (
	voidT  = wb.FuncType{}
	i32T   = wb.FuncType{Results: []byte{wb.I32}}
	i64i64 = wb.FuncType{Params: []byte{wb.I64}, Results: []byte{wb.I64}}
)

// runModule is a module whose only export "run" is body, returning an i32, with the given memories
// and tables, importing the kernel functions named (of type i64->i64, as alloc and input_load_u64).
func runModule(body []byte, mems, tables []wb.Limits, imports ...string) []byte {
	m := wb.Module{Types: []wb.FuncType{i32T, i64i64, voidT}, Memories: mems, Tables: tables}
	for _, name := range imports {
		m.Imports = append(m.Imports, wb.Import{Module: KernelModule, Name: name, Type: 1})
	}
	m.Funcs = []wb.Func{{Type: 0, Body: body}}
	m.Exports = []wb.Export{{Name: "run", Kind: wb.ExportFunc, Index: uint32(len(imports))}}
	return m.Bytes()
}

func loadWasm(t *testing.T, e *Engine, wasm []byte, limits Limits) (*Plugin, error) {
	t.Helper()
	p, err := e.Load(context.Background(), wasm, PluginConfig{Name: "hostile", Limits: limits})
	if err == nil {
		t.Cleanup(func() { p.Close(context.Background()) })
	}
	return p, err
}

func mustLoadWasm(t *testing.T, e *Engine, wasm []byte, limits Limits) *Plugin {
	t.Helper()
	p, err := loadWasm(t, e, wasm, limits)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// A memory counts against limits.maxMemory whether it is exported or not.
func TestHiddenMemory(t *testing.T) {
	e := newTestEngine(t)
	one := wb.Body(wb.I32Const(1))
	for _, pages := range []uint32{16384, 65536} { // 1 GiB, 4 GiB
		_, err := loadWasm(t, e, runModule(one, []wb.Limits{{Min: pages}}, nil), Limits{MaxMemoryBytes: 1 << 20})
		want := fmt.Sprintf("the module starts with %s of memory, more than limits.maxMemory 1Mi", formatBytes(uint64(pages)<<16))
		if !errors.Is(err, ErrMemoryLimit) || !strings.Contains(err.Error(), want) {
			t.Errorf("%d pages: %v, want %q", pages, err, want)
		}
	}
	// Growth of a memory that is not exported stops at the budget: memory.grow returns -1.
	grow := wb.Body(wb.LoopStart, wb.I32Const(1), wb.MemGrow, wb.I32Const(-1), []byte{0x47}, wb.BrIf0, wb.End,
		[]byte{0x3f, 0x00}) // memory.size
	p := mustLoadWasm(t, e, runModule(grow, []wb.Limits{{Min: 1}}, nil), Limits{MaxMemoryBytes: 8 << 20, CallTimeout: 10 * time.Second})
	i := newInstance(t, p)
	_, rc, err := i.Call(context.Background(), "run", nil)
	if err != nil || rc != 128 {
		t.Fatalf("grown to %d pages (%v), want 128 (8Mi)", rc, err)
	}
}

// A table cannot take memory beyond the budget: a declared maximum is reserved from it, and a table
// without one cannot grow (growing by 2^32-2 entries would otherwise be a fatal Go out-of-memory).
func TestTables(t *testing.T) {
	e := newTestEngine(t)
	growBy := func(n int32) []byte { return wb.Body(wb.RefNull, wb.I32Const(n), wb.TableGrow) }
	p := mustLoadWasm(t, e, runModule(growBy(-2), []wb.Limits{{Min: 1}}, []wb.Limits{{Min: 1}}), Limits{MaxMemoryBytes: 8 << 20})
	if _, rc, err := newInstance(t, p).Call(context.Background(), "run", nil); err != nil || rc != 0xffffffff {
		t.Errorf("table.grow by 2^32-2 without a maximum: %d, %v; want -1", int32(rc), err)
	}
	p = mustLoadWasm(t, e, runModule(growBy(1<<26), []wb.Limits{{Min: 1}}, []wb.Limits{{Min: 1}}), Limits{MaxMemoryBytes: 8 << 20})
	if _, rc, err := newInstance(t, p).Call(context.Background(), "run", nil); err != nil || rc != 0xffffffff {
		t.Errorf("table.grow by 2^26 without a maximum: %d, %v; want -1", int32(rc), err)
	}
	_, err := loadWasm(t, e, runModule(growBy(1<<26), nil, []wb.Limits{{Min: 1, Max: wb.Index(1 << 26)}}), Limits{MaxMemoryBytes: 8 << 20})
	if !errors.Is(err, ErrMemoryLimit) || !strings.Contains(err.Error(), "tables of up to 512Mi, more than limits.maxMemory 8Mi") {
		t.Errorf("table with a maximum of 2^26: %v", err)
	}
	p = mustLoadWasm(t, e, runModule(growBy(1000), nil, []wb.Limits{{Min: 1, Max: wb.Index(1001)}}), Limits{MaxMemoryBytes: 8 << 20})
	if _, rc, err := newInstance(t, p).Call(context.Background(), "run", nil); err != nil || rc != 1 {
		t.Errorf("table.grow within its maximum: %d, %v; want 1", int32(rc), err)
	}
}

// alloc(1) in a loop stops at the budget, records included, and an idle instance gives them back.
func TestAllocRecords(t *testing.T) {
	e := newTestEngine(t)
	body := wb.Body(wb.LoopStart, wb.I64Const(1), wb.Call(0), wb.I64Eqz, []byte{0x45}, wb.BrIf0, wb.End, wb.I32Const(0))
	const max = 8 << 20
	p := mustLoadWasm(t, e, runModule(body, nil, nil, "alloc"), Limits{MaxMemoryBytes: max, CallTimeout: 20 * time.Second})
	i := newInstance(t, p)
	var blocks int
	i.plugin.limits.MaxOutputBytes = 0
	_, rc, err := i.Call(context.Background(), "run", nil)
	if err != nil || rc != 0 {
		t.Fatalf("rc %d, %v", rc, err)
	}
	blocks = cap(i.k.blocks)
	if used := uint64(cap(i.k.mem)) + uint64(blocks)*blockRecordBytes; used > max || i.budget.arena > max {
		t.Errorf("kernel holds %d bytes, over the 8Mi budget", used)
	}
	if blocks > 4096 {
		t.Errorf("an idle instance keeps %d block records", blocks)
	}
}

// The input counts against the budget, as in Extism, and input_load_* past its end reads 0.
func TestInputCharged(t *testing.T) {
	e := newTestEngine(t)
	p := mustLoadWasm(t, e, runModule(wb.Body(wb.I32Const(0)), []wb.Limits{{Min: 0}}, nil), Limits{MaxMemoryBytes: 64 << 10})
	_, _, err := newInstance(t, p).Call(context.Background(), "run", make([]byte, 2<<20))
	if !errors.Is(err, ErrMemoryLimit) || !strings.Contains(err.Error(), "the 2097152-byte input does not fit in limits.maxMemory 64Ki") {
		t.Errorf("2 MiB input under 64Ki: %v", err)
	}
	load := func(off int64) []byte { // returns input_load_u64(off) truncated to i32
		return wb.Body(wb.I64Const(off), wb.Call(0), []byte{0xa7}) // i32.wrap_i64
	}
	for _, c := range []struct {
		off  int64
		want uint32
	}{{0, 0x64636261}, {2, 0x6463}, {3, 0x64}, {4, 0}, {1 << 40, 0}} {
		wasm := runModule(load(c.off), nil, nil, "input_load_u64")
		p := mustLoadWasm(t, e, wasm, Limits{})
		if _, rc, err := newInstance(t, p).Call(context.Background(), "run", []byte("abcd")); err != nil || rc != c.want {
			t.Errorf("input_load_u64(%d) of abcd: %#x, %v; want %#x", c.off, rc, err, c.want)
		}
		if c.off >= 1<<32 {
			continue // the SDK truncates the offset to 32 bits
		}
		sdk, err := extism.NewPlugin(context.Background(), extism.Manifest{Wasm: []extism.Wasm{extism.WasmData{Data: wasm}}}, extism.PluginConfig{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if rc, _, err := sdk.Call("run", []byte("abcd")); err != nil || rc != c.want {
			t.Errorf("Extism: input_load_u64(%d) of abcd: %#x, %v; want %#x", c.off, rc, err, c.want)
		}
	}
	i := newInstance(t, loadFile(t, e, testplugins.Build(t, "misbehave"), PluginConfig{Name: "misbehave"}))
	for _, fn := range []string{"input_load_u8", "input_load_u64"} {
		if out, rc, err := i.Call(context.Background(), "oob", []byte(fn)); rc != 0 || err != nil || string(out) != "host accepted out-of-bounds "+fn {
			t.Errorf("%s far past the input: %q, rc %d, %v", fn, out, rc, err)
		}
	}
}

// An HTTP response body is read no further than the budget leaves.
func TestHTTPBodyCharged(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		chunk := []byte(strings.Repeat("x", 1<<20))
		for range 256 {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	e := newTestEngine(t)
	wasm := testplugins.Build(t, "http-fetch")
	p := loadFile(t, e, wasm, PluginConfig{Name: "fetch",
		Permissions: Permissions{HTTP: &HTTP{AllowedHosts: []string{"127.0.0.1"}, AllowPrivateNetworks: true}, Log: &Log{Level: LogOff}},
		Limits:      Limits{MaxMemoryBytes: 32 << 20, CallTimeout: 10 * time.Second}})
	_, rc, err := newInstance(t, p).Call(context.Background(), "fetch", []byte(srv.URL))
	if rc != 1 || err == nil || !strings.Contains(err.Error(), "out of memory: the response body is over the") ||
		!strings.Contains(err.Error(), "limits.maxMemory 32Mi leaves") {
		t.Errorf("256 MiB body under 32Mi: rc %d, %v", rc, err)
	}
}

// Vars count against the budget.
func TestVarsCharged(t *testing.T) {
	i := fuzzInstance()
	i.plugin.perms.Vars.MaxBytes = 1 << 30
	i.budget.max = 4096
	ctx := &i.cctx
	k := i.k.put("t", []byte("key"))
	v := i.k.put("t", make([]byte, 3000))
	s := []uint64{k, v}
	defer func() {
		f, ok := recover().(*kernelFault)
		if !ok || !strings.Contains(f.Error(), "do not fit in limits.maxMemory 4Ki") {
			t.Errorf("var of 3000 bytes beside 3000 bytes of kernel memory under 4Ki: %v", f)
		}
	}()
	varSet(ctx, nil, s)
}

// The start section, the guest's own code run while instantiating, is stopped at the init deadline.
func TestStartLoop(t *testing.T) {
	e := newTestEngine(t)
	m := wb.Module{Types: []wb.FuncType{voidT, i32T}, Funcs: []wb.Func{{Type: 0, Body: wb.Loop()}, {Type: 1, Body: wb.Body(wb.I32Const(0))}},
		Exports: []wb.Export{{Name: "run", Kind: wb.ExportFunc, Index: 1}}, Start: wb.Index(0)}
	for _, c := range []struct {
		limits Limits
		want   string
	}{
		{Limits{CallTimeout: 200 * time.Millisecond}, "the start function did not finish within 200ms (limits.callTimeout)"},
		{Limits{CallTimeout: time.Minute, InitTimeout: 300 * time.Millisecond}, "within 300ms (the host's init timeout, manager host --max-init-timeout)"},
	} {
		p := mustLoadWasm(t, e, m.Bytes(), c.limits)
		start := time.Now()
		_, err := p.NewInstance(context.Background())
		if !errors.Is(err, ErrInitTimeout) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("NewInstance: %v, want %q", err, c.want)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("stopped after %v", d)
		}
	}
	// The caller's context stops it too.
	p := mustLoadWasm(t, e, m.Bytes(), Limits{InitTimeout: time.Minute})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := p.NewInstance(ctx); !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("NewInstance with a cancelled context: %v", err)
	}
	// Without any timeout the default applies; a reactor's _initialize that loops is stopped as well.
	r := wb.Module{Types: []wb.FuncType{voidT, i32T}, Funcs: []wb.Func{{Type: 0, Body: wb.Loop()}, {Type: 1, Body: wb.Body(wb.I32Const(0))}},
		Exports: []wb.Export{{Name: "_initialize", Kind: wb.ExportFunc, Index: 0}, {Name: "run", Kind: wb.ExportFunc, Index: 1}}}
	p = mustLoadWasm(t, e, r.Bytes(), Limits{InitTimeout: 200 * time.Millisecond})
	if _, err := p.NewInstance(context.Background()); !errors.Is(err, ErrInitTimeout) || !strings.Contains(err.Error(), "not done within 200ms") {
		t.Errorf("_initialize loop: %v", err)
	}
}

// A memory that starts with no pages is held to the budget too (found by FuzzLoadModule).
func TestEmptyMemoryGrowth(t *testing.T) {
	e := newTestEngine(t)
	body := wb.Body(wb.I32Const(12288), wb.MemGrow) // 768 MiB at once
	p := mustLoadWasm(t, e, runModule(body, []wb.Limits{{Min: 0}}, nil), Limits{MaxMemoryBytes: 1 << 20})
	i := newInstance(t, p)
	if _, rc, err := i.Call(context.Background(), "run", nil); err != nil || rc != 0xffffffff {
		t.Errorf("memory.grow by 768 MiB from 0 pages under 1Mi: %d, %v; want -1", int32(rc), err)
	}
	if i.budget.guest > 1<<20 {
		t.Errorf("guest memory %d bytes", i.budget.guest)
	}
}

// Go holds a grown guest memory's whole capacity, not only its size, so the budget charges the
// capacity: a memory grown past its capacity gets room for later growth, and the kernel cannot take
// that room too.
func TestGrownMemoryCapacityCharged(t *testing.T) {
	inst := fuzzInstance()
	inst.budget = memBudget{max: 64 << 20}
	m := &linearMemory{budget: &inst.budget, max: 1 << 32}
	m.Reallocate(1 << 20) // the declared minimum
	for _, size := range []uint64{20 << 20, 21 << 20} {
		if m.Reallocate(size) == nil {
			t.Fatalf("memory.grow to %dMi refused under 64Mi", size>>20)
		}
	}
	if c := uint64(cap(m.buf)); c <= 21<<20 || inst.budget.guest != c {
		t.Fatalf("a 21Mi memory of capacity %d charged %d", c, inst.budget.guest)
	}
	if h := inst.k.alloc(40 << 20); h != 0 {
		t.Errorf("alloc(40Mi) beside a 21Mi memory of capacity %dMi fits a 64Mi budget", cap(m.buf)>>20)
	}
	if h := inst.k.alloc(16 << 20); h == 0 {
		t.Errorf("alloc(16Mi) beside a 21Mi memory of capacity %dMi refused under 64Mi", cap(m.buf)>>20)
	}
}
