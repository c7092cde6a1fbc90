package runtime

import (
	"context"
	"fmt"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// Permissions as they are named in the WasmPlugin spec and in errors.
const (
	permHTTP = "permissions.http"
	permVars = "permissions.vars"
	permLog  = "permissions.log"
)

// hostFunc is one function of a host module (extism:host/env or extism:host/user).
type hostFunc struct {
	name            string
	perm            string // "" for the kernel and config_get
	params, results []api.ValueType
	fn              api.GoModuleFunc
}

const (
	i32 = api.ValueTypeI32
	i64 = api.ValueTypeI64
)

func types(t ...api.ValueType) []api.ValueType { return t }

// hostFuncs is the Extism kernel and host services, with the signatures Extism PDKs import. They
// run on the stack wazero passes (no reflection) and find their instance through the call's
// context.
var hostFuncs = []hostFunc{
	{"alloc", "", types(i64), types(i64), func(ctx context.Context, _ api.Module, s []uint64) {
		s[0] = instanceOf(ctx).k.alloc(s[0])
	}},
	{"free", "", types(i64), nil, func(ctx context.Context, _ api.Module, s []uint64) {
		instanceOf(ctx).k.free(s[0])
	}},
	{"length", "", types(i64), types(i64), func(ctx context.Context, _ api.Module, s []uint64) {
		s[0] = instanceOf(ctx).k.length(s[0])
	}},
	{"length_unsafe", "", types(i64), types(i64), func(ctx context.Context, _ api.Module, s []uint64) {
		s[0] = instanceOf(ctx).k.length(s[0])
	}},
	{"load_u8", "", types(i64), types(i32), func(ctx context.Context, _ api.Module, s []uint64) {
		s[0] = uint64(instanceOf(ctx).k.loadU8(s[0]))
	}},
	{"load_u64", "", types(i64), types(i64), func(ctx context.Context, _ api.Module, s []uint64) {
		s[0] = instanceOf(ctx).k.loadU64(s[0])
	}},
	{"store_u8", "", types(i64, i32), nil, func(ctx context.Context, _ api.Module, s []uint64) {
		instanceOf(ctx).k.storeU8(s[0], byte(s[1]))
	}},
	{"store_u64", "", types(i64, i64), nil, func(ctx context.Context, _ api.Module, s []uint64) {
		instanceOf(ctx).k.storeU64(s[0], s[1])
	}},
	{"input_length", "", nil, types(i64), func(ctx context.Context, _ api.Module, s []uint64) {
		s[0] = instanceOf(ctx).k.inputLength()
	}},
	{"input_load_u8", "", types(i64), types(i32), func(ctx context.Context, _ api.Module, s []uint64) {
		s[0] = uint64(instanceOf(ctx).k.inputLoadU8(s[0]))
	}},
	{"input_load_u64", "", types(i64), types(i64), func(ctx context.Context, _ api.Module, s []uint64) {
		s[0] = instanceOf(ctx).k.inputLoadU64(s[0])
	}},
	{"input_offset", "", nil, types(i64), func(ctx context.Context, _ api.Module, s []uint64) {
		s[0] = instanceOf(ctx).k.inputOffset()
	}},
	{"input_set", "", types(i64, i64), nil, func(ctx context.Context, _ api.Module, s []uint64) {
		instanceOf(ctx).k.inputSet(s[0], s[1])
	}},
	{"output_set", "", types(i64, i64), nil, func(ctx context.Context, _ api.Module, s []uint64) {
		i := instanceOf(ctx)
		i.k.outputSet(s[0], s[1], uint64(max(i.plugin.limits.MaxOutputBytes, 0)))
	}},
	{"output_length", "", nil, types(i64), func(ctx context.Context, _ api.Module, s []uint64) {
		s[0] = instanceOf(ctx).k.outLen
	}},
	{"output_offset", "", nil, types(i64), func(ctx context.Context, _ api.Module, s []uint64) {
		s[0] = instanceOf(ctx).k.outHandle
	}},
	{"error_set", "", types(i64), nil, func(ctx context.Context, _ api.Module, s []uint64) {
		instanceOf(ctx).k.errorSet(s[0])
	}},
	{"error_get", "", nil, types(i64), func(ctx context.Context, _ api.Module, s []uint64) {
		s[0] = instanceOf(ctx).k.errHandle
	}},
	{"reset", "", nil, nil, func(ctx context.Context, _ api.Module, s []uint64) {
		instanceOf(ctx).k.reset()
	}},
	{"memory_bytes", "", nil, types(i64), func(ctx context.Context, _ api.Module, s []uint64) {
		s[0] = uint64(cap(instanceOf(ctx).k.mem))
	}},
	{"config_get", "", types(i64), types(i64), configGet},
	{"var_get", permVars, types(i64), types(i64), varGet},
	{"var_set", permVars, types(i64, i64), nil, varSet},
	{"http_request", permHTTP, types(i64, i64), types(i64), httpRequest},
	{"http_status_code", permHTTP, nil, types(i32), func(ctx context.Context, _ api.Module, s []uint64) {
		s[0] = uint64(uint32(int32(instanceOf(ctx).httpStatus)))
	}},
	{"http_headers", permHTTP, nil, types(i64), httpHeaders},
	{"get_log_level", permLog, nil, types(i32), func(ctx context.Context, _ api.Module, s []uint64) {
		s[0] = uint64(uint32(instanceOf(ctx).plugin.logLevel.extism()))
	}},
	{"log_trace", permLog, types(i64), nil, logFunc(LogTrace)},
	{"log_debug", permLog, types(i64), nil, logFunc(LogDebug)},
	{"log_info", permLog, types(i64), nil, logFunc(LogInfo)},
	{"log_warn", permLog, types(i64), nil, logFunc(LogWarn)},
	{"log_error", permLog, types(i64), nil, logFunc(LogError)},
}

// hostModule is a host module guests import from: its functions by name, and what checkImport says of
// a name it lacks.
type hostModule struct {
	name    string
	funcs   []hostFunc
	byName  map[string]*hostFunc
	unknown string
}

// hostModules are the modules the engine links: the Extism kernel with its services, and our own
// services as Extism user host functions, which any PDK can import.
var hostModules = map[string]*hostModule{
	KernelModule: newHostModule(KernelModule, hostFuncs, "is not an Extism kernel function"),
	UserModule:   newHostModule(UserModule, userFuncs, "is not a host function of ours (kv_get, kv_set, kv_delete, kv_list)"),
}

func newHostModule(name string, funcs []hostFunc, unknown string) *hostModule {
	m := &hostModule{name: name, funcs: funcs, byName: make(map[string]*hostFunc, len(funcs)), unknown: unknown}
	for i := range funcs {
		m.byName[funcs[i].name] = &funcs[i]
	}
	return m
}

// instantiateHostModules links every host module into rt.
func instantiateHostModules(ctx context.Context, rt wazero.Runtime) error {
	for _, m := range hostModules {
		b := rt.NewHostModuleBuilder(m.name)
		for _, f := range m.funcs {
			b.NewFunctionBuilder().WithGoModuleFunction(f.fn, f.params, f.results).WithName(f.name).Export(f.name)
		}
		if _, err := b.Instantiate(ctx); err != nil {
			return fmt.Errorf("instantiate %s: %w", m.name, err)
		}
	}
	return nil
}

// instanceOf returns the instance whose call is running. Instance.Call passes its own context
// type, so this is a type assertion on the hot path.
func instanceOf(ctx context.Context) *Instance {
	if c, ok := ctx.(*callCtx); ok {
		return c.inst
	}
	if i, ok := ctx.Value(instanceKey{}).(*Instance); ok {
		return i
	}
	panic(&kernelFault{fn: "?", msg: "called outside of a plugin call"})
}

// putString is put for a string, without converting it to a []byte first.
func (k *kernel) putString(fn, s string) uint64 {
	if len(s) == 0 {
		return 0
	}
	h := k.alloc(uint64(len(s)))
	if h == 0 {
		fault(fn, "out of memory: cannot allocate %d bytes of kernel memory", len(s))
	}
	copy(k.mem[h-arenaBase:], s)
	return h
}

func configGet(ctx context.Context, _ api.Module, s []uint64) {
	i := instanceOf(ctx)
	key := i.k.bytes("config_get", s[0])
	v, ok := i.plugin.config[string(key)]
	if !ok {
		s[0] = 0
		return
	}
	s[0] = i.k.putString("config_get", v)
}

// varEntryOverhead is what Extism counts for each var besides its key and value.
const varEntryOverhead = 40

type varEntry struct{ value []byte }

func varGet(ctx context.Context, _ api.Module, s []uint64) {
	i := instanceOf(ctx)
	h := s[0]
	key := i.k.bytes("var_get", h)
	v, ok := i.vars[string(key)]
	i.k.free(h)
	if !ok {
		s[0] = 0
		return
	}
	s[0] = i.k.put("var_get", v.value)
}

func varSet(ctx context.Context, _ api.Module, s []uint64) {
	i := instanceOf(ctx)
	perm := i.plugin.perms.Vars
	if perm == nil {
		fault("var_set", "vars are not granted (%s)", permVars)
	}
	kh, vh := s[0], s[1]
	key := i.k.bytes("var_set", kh)
	old, exists := i.vars[string(key)]
	if vh == 0 {
		if exists {
			n := varEntryOverhead + int64(len(key)+len(old.value))
			i.varBytes -= n
			i.budget.other -= uint64(n)
			delete(i.vars, string(key))
		}
		i.k.free(kh)
		return
	}
	value := i.k.bytes("var_set", vh)
	size := i.varBytes + varEntryOverhead + int64(len(key)+len(value))
	if exists {
		size -= varEntryOverhead + int64(len(key)+len(old.value))
	}
	limit := perm.MaxBytes
	if limit <= 0 {
		limit = defaultMaxVarBytes
	}
	if size >= limit {
		fault("var_set", "variable store is full: %d bytes, over the limit of %d (%s.maxBytes)", size, limit, permVars)
	}
	if grow := size - i.varBytes; grow > 0 && !i.budget.charge(uint64(grow)) {
		fault("var_set", "out of memory: %d more bytes of vars do not fit in limits.maxMemory %s", grow, formatBytes(i.budget.max))
	} else if grow < 0 {
		i.budget.other -= uint64(-grow)
	}
	if exists {
		old.value = append(old.value[:0], value...)
	} else {
		if i.vars == nil {
			i.vars = map[string]*varEntry{}
		}
		i.vars[string(key)] = &varEntry{value: append([]byte(nil), value...)}
	}
	i.varBytes = size
	i.k.free(kh)
	i.k.free(vh)
}

func logFunc(level LogLevel) api.GoModuleFunc {
	return func(ctx context.Context, _ api.Module, s []uint64) {
		i := instanceOf(ctx)
		h := s[0]
		if level >= i.plugin.logLevel {
			msg := i.k.bytes("log_"+level.String(), h)
			i.log(level, string(msg))
		}
		i.k.free(h)
	}
}
