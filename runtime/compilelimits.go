package runtime

import "fmt"

// Defaults of CompileLimits, measured in RATIONALE.md ("Why are compiles bounded the way they are?").
const (
	DefaultMaxFunctionBytes = 1 << 20
	DefaultMaxFunctions     = 1 << 17
	DefaultMaxLocals        = 50_000
	DefaultCompileMemory    = 384 << 20
)

// CompileLimits bound compiling one untrusted module. The compiler's memory grows with the size of
// the largest function (about 150 bytes per byte of code), so the cheap checks on the module's
// shape run first and refuse what would not fit; CompileMemory then bounds the compile itself when
// it runs in a child process (EngineConfig.CompileCommand). Zero fields take their defaults;
// a negative one turns the check off.
type CompileLimits struct {
	// MaxFunctionBytes bounds one function body. Default 1 MiB; compilers rarely emit functions
	// over 100 KiB.
	MaxFunctionBytes int64
	// MaxFunctions bounds the number of functions a module defines. Default 131072.
	MaxFunctions int64
	// MaxLocals bounds the locals of one function. Default 50000, the limit web browsers apply.
	MaxLocals int64
	// CompileMemory bounds the memory of a compiling child process (its data segment, an
	// RLIMIT_DATA). Default 384 MiB: two compiles at once fit beside a controller in 1 GiB.
	CompileMemory int64
}

func (l CompileLimits) withDefaults() CompileLimits {
	def := func(v *int64, d int64) {
		if *v == 0 {
			*v = d
		}
	}
	def(&l.MaxFunctionBytes, DefaultMaxFunctionBytes)
	def(&l.MaxFunctions, DefaultMaxFunctions)
	def(&l.MaxLocals, DefaultMaxLocals)
	def(&l.CompileMemory, DefaultCompileMemory)
	return l
}

// check refuses a module whose shape is over a limit, naming the limit and the flag that raises it.
func (l CompileLimits) check(s *shape) error {
	switch {
	case l.MaxFunctions > 0 && int64(s.funcs) > l.MaxFunctions:
		return fmt.Errorf("%w: it defines %d functions, more than the %d the host compiles (--compile-max-functions)",
			ErrModuleTooComplex, s.funcs, l.MaxFunctions)
	case l.MaxFunctionBytes > 0 && int64(s.maxBody) > l.MaxFunctionBytes:
		return fmt.Errorf("%w: function %d has %d bytes of code, more than the %s the host compiles in one function (--compile-max-function-size)",
			ErrModuleTooComplex, s.maxBodyI, s.maxBody, formatBytes(uint64(l.MaxFunctionBytes)))
	case l.MaxLocals > 0 && s.locals > uint64(l.MaxLocals):
		return fmt.Errorf("%w: function %d declares %d locals, more than the %d the host compiles (--compile-max-locals)",
			ErrModuleTooComplex, s.localsI, s.locals, l.MaxLocals)
	}
	return nil
}
