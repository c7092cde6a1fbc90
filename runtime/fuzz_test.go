package runtime

import (
	"context"
	"encoding/binary"
	"testing"

	"github.com/go-logr/logr"

	"github.com/wasm-operator/wasm-operator/internal/kv"
)

// fuzzedFuncs are the host functions a guest can drive with arbitrary numbers and that need no
// network: the kernel, config, vars, logging and http_headers.
var fuzzedFuncs = func() []hostFunc {
	var fs []hostFunc
	for _, f := range hostFuncs {
		if f.name != "http_request" {
			fs = append(fs, f)
		}
	}
	return append(fs, userFuncs...)
}()

// FuzzKernel drives the kernel and host functions, as wazero calls them, with arbitrary sequences
// of calls, offsets and lengths. A refusal (a *kernelFault, which wazero turns into the call's
// error) is fine; any other panic would be a crash of the host.
func FuzzKernel(f *testing.F) {
	f.Add([]byte("input"), []byte{0, 1, 8, 6, 1, 1, 7, 1, 1, 1, 1})
	f.Add([]byte(""), []byte{11, 3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0})
	f.Add([]byte("0123456789abcdef"), []byte{0, 1, 200, 13, 1, 1, 1, 200, 16, 1, 1, 21, 1, 1, 22, 1, 1, 1, 1})
	f.Add([]byte("k"), []byte{0, 1, 1, 6, 1, 1, 1, 107, 20, 1, 1, 0, 1, 4, 22, 1, 1, 1, 5, 21, 1, 1})
	f.Fuzz(func(t *testing.T, input, program []byte) {
		inst := fuzzInstance()
		inst.k.extInput = input
		stack := make([]uint64, 3)
		ctx := &inst.cctx
		for len(program) > 0 {
			fn := fuzzedFuncs[int(program[0])%len(fuzzedFuncs)]
			program = program[1:]
			stack[0], program = fuzzArg(program)
			stack[1], program = fuzzArg(program)
			if len(fn.params) > 2 {
				stack[2], program = fuzzArg(program)
			}
			callHost(t, fn, ctx, stack)
		}
		// What Call does after the guest returns.
		_ = inst.k.output()
		_ = inst.k.errorText()
		inst.k.release()
	})
}

func callHost(t *testing.T, fn hostFunc, ctx context.Context, stack []uint64) {
	defer func() {
		if r := recover(); r != nil {
			_, kernel := r.(*kernelFault)
			_, user := r.(*userFault)
			if !kernel && !user {
				t.Fatalf("%s(%d, %d) panicked: %v", fn.name, stack[0], stack[1], r)
			}
		}
	}()
	fn.fn(ctx, nil, stack)
}

// fuzzArg decodes one argument: a tag byte picks zero, a small number, a number near the arena's
// handles, or any 64-bit value.
func fuzzArg(p []byte) (uint64, []byte) {
	if len(p) == 0 {
		return 0, p
	}
	tag, p := p[0], p[1:]
	switch tag % 4 {
	case 0:
		return 0, p
	case 1:
		if len(p) == 0 {
			return 1, p
		}
		return uint64(p[0]), p[1:]
	case 2:
		if len(p) < 2 {
			return arenaBase, p
		}
		return arenaBase + uint64(binary.LittleEndian.Uint16(p)), p[2:]
	default:
		if len(p) < 8 {
			return uint64(tag), nil
		}
		return binary.LittleEndian.Uint64(p), p[8:]
	}
}

func fuzzInstance() *Instance {
	p := &Plugin{
		e:      &Engine{},
		name:   "fuzz",
		config: map[string]string{"k": "value", "": "empty key"},
		perms: Permissions{Vars: &Vars{MaxBytes: 4096}, Log: &Log{Level: LogTrace},
			KV: &KV{Store: kv.NewMemory(kv.Limits{MaxBytes: 4096, MaxKeys: 16}), MaxBytes: 4096, MaxKeys: 16}},
		logLevel: LogTrace,
		logger:   logr.Discard(),
		limits:   Limits{MaxMemoryBytes: 1 << 20, MaxOutputBytes: 1 << 16},
	}
	i := &Instance{plugin: p, killCh: make(chan struct{})}
	i.cctx = callCtx{parent: context.Background(), inst: i}
	i.budget.max = 1 << 20
	i.k.budget = &i.budget
	return i
}
