package runtime

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// Names of the host modules a plugin may import from.
const (
	KernelModule = "extism:host/env"
	WASIModule   = "wasi_snapshot_preview1"
)

// ABI values of ModuleInfo.ABI.
const (
	// ABIExtism: the module imports the Extism kernel, so it exchanges input and output with it.
	ABIExtism = "extism"
	// ABINone: the module uses no Extism function; it can be called, but sees no input and
	// gives no output except through its return code.
	ABINone = "none"
)

// ErrMemoryLimit is returned when a module's initial memory exceeds Limits.MaxMemoryBytes.
var ErrMemoryLimit = errors.New("module memory over the limit")

// ErrNoCallableExport is returned for a module that exports no function a host can call.
var ErrNoCallableExport = errors.New("module exports no callable function")

// ModuleInfo describes a compiled module.
type ModuleInfo struct {
	// Exports are the functions a host can call (no parameters, at most one result), sorted.
	// Runtime initialisers (_initialize, __wasm_call_ctors, hs_init) are left out.
	Exports []string
	// Imports are the imported functions as "module.name", sorted.
	Imports []string
	// WASI is true when the module imports wasi_snapshot_preview1.
	WASI bool
	// ABI is ABIExtism or ABINone.
	ABI string
	// MinMemoryBytes is the size of the module's memories when instantiated, exported or not.
	MinMemoryBytes uint64
	// TableBytes is what the module's tables take at their maximum size, reserved from
	// Limits.MaxMemoryBytes for each instance. A table that declares no maximum cannot grow.
	TableBytes uint64
	// Unsupported lists imports no host can provide (memories, tables, globals), as "module.name".
	Unsupported []string
}

// initFunctions are exports Extism calls to initialise a guest runtime, not meant to be called.
var initFunctions = map[string]bool{"_initialize": true, "__wasm_call_ctors": true, "hs_init": true}

func inspect(cm wazero.CompiledModule) ModuleInfo {
	info := ModuleInfo{ABI: ABINone}
	for name, def := range cm.ExportedFunctions() {
		if len(def.ParamTypes()) == 0 && len(def.ResultTypes()) <= 1 && !initFunctions[name] {
			info.Exports = append(info.Exports, name)
		}
	}
	for _, def := range cm.ImportedFunctions() {
		mod, name, _ := def.Import()
		info.Imports = append(info.Imports, mod+"."+name)
		switch mod {
		case WASIModule:
			info.WASI = true
		case KernelModule:
			info.ABI = ABIExtism
		}
	}
	for _, def := range cm.ImportedMemories() {
		mod, name, _ := def.Import()
		info.Unsupported = append(info.Unsupported, mod+"."+name)
	}
	slices.Sort(info.Exports)
	slices.Sort(info.Imports)
	info.Imports = slices.Compact(info.Imports)
	return info
}

// ImportError is a module import the host does not provide as asked.
type ImportError struct {
	// Import is "module.name".
	Import string
	// Permission is the permission to grant ("permissions.http"), or "" when no permission
	// provides the import.
	Permission string
	// Reason explains an import that no permission provides.
	Reason string
}

func (e *ImportError) Error() string {
	if e.Permission != "" {
		return "import " + e.Import + " needs " + e.Permission
	}
	return "import " + e.Import + " " + e.Reason
}

// Check reports, in one error, every reason the module cannot run with the given permissions and
// limits: imports of ungranted host services (each an *ImportError naming the permission to grant),
// imports no host provides, an initial memory over Limits.MaxMemoryBytes (ErrMemoryLimit), and no
// callable export (ErrNoCallableExport). A controller uses it to say exactly what to change.
func (m *Module) Check(perms Permissions, limits Limits) error {
	return check(m.c.cm, m.c.info, perms, limits)
}

func check(cm wazero.CompiledModule, info ModuleInfo, perms Permissions, limits Limits) error {
	var errs []error
	for _, def := range cm.ImportedFunctions() {
		mod, name, _ := def.Import()
		if err := checkImport(mod, name, def, perms); err != nil {
			errs = append(errs, err)
		}
	}
	for _, imp := range info.Unsupported {
		errs = append(errs, &ImportError{Import: imp, Reason: "is a memory, table or global import, which the host does not provide"})
	}
	if max := uint64(limits.MaxMemoryBytes); max > 0 && info.MinMemoryBytes+info.TableBytes > max {
		var parts []string
		if info.MinMemoryBytes > 0 || info.TableBytes == 0 {
			parts = append(parts, formatBytes(info.MinMemoryBytes)+" of memory")
		}
		if info.TableBytes > 0 {
			parts = append(parts, "tables of up to "+formatBytes(info.TableBytes))
		}
		what := strings.Join(parts, " and ")
		errs = append(errs, fmt.Errorf("%w: the module starts with %s, more than limits.maxMemory %s",
			ErrMemoryLimit, what, formatBytes(max)))
	}
	if len(info.Exports) == 0 {
		errs = append(errs, fmt.Errorf("%w (one with no parameters and at most one result)", ErrNoCallableExport))
	}
	if len(errs) == 0 {
		return nil
	}
	return joinErrors(errs)
}

func checkImport(mod, name string, def api.FunctionDefinition, perms Permissions) error {
	imp := mod + "." + name
	switch mod {
	case WASIModule:
		if !wasiFunctions[name] {
			return &ImportError{Import: imp, Reason: "is not a WASI preview 1 function"}
		}
		return nil
	}
	hm, ok := hostModules[mod]
	if !ok {
		return &ImportError{Import: imp, Reason: "is not provided by the host (only " + KernelModule + ", " + UserModule + " and " + WASIModule + " are)"}
	}
	hf, ok := hm.byName[name]
	if !ok {
		return &ImportError{Import: imp, Reason: hm.unknown}
	}
	if !slices.Equal(def.ParamTypes(), hf.params) || !slices.Equal(def.ResultTypes(), hf.results) {
		return &ImportError{Import: imp, Reason: fmt.Sprintf("has signature %s, want %s",
			signature(def.ParamTypes(), def.ResultTypes()), signature(hf.params, hf.results))}
	}
	granted := true
	switch hf.perm {
	case permHTTP:
		granted = perms.HTTP != nil
	case permVars:
		granted = perms.Vars != nil
	case permLog:
		granted = perms.Log != nil
	case permKV:
		granted = perms.KV != nil
	}
	if !granted {
		return &ImportError{Import: imp, Permission: hf.perm}
	}
	return nil
}

func signature(params, results []api.ValueType) string {
	names := func(ts []api.ValueType) string {
		s := make([]string, len(ts))
		for i, t := range ts {
			s[i] = api.ValueTypeName(t)
		}
		return strings.Join(s, ",")
	}
	return "(" + names(params) + ")->(" + names(results) + ")"
}

// joinedErrors is errors.Join with "; " between messages, which reads well in a condition message.
type joinedErrors []error

func (j joinedErrors) Error() string {
	s := make([]string, len(j))
	for i, e := range j {
		s[i] = e.Error()
	}
	return strings.Join(s, "; ")
}

func (j joinedErrors) Unwrap() []error { return j }

func joinErrors(errs []error) error {
	if len(errs) == 1 {
		return errs[0]
	}
	return joinedErrors(errs)
}

// wasiFunctions are the functions of wasi_snapshot_preview1 wazero implements.
var wasiFunctions = map[string]bool{}

func init() {
	for _, n := range []string{
		"args_get", "args_sizes_get", "environ_get", "environ_sizes_get", "clock_res_get", "clock_time_get",
		"fd_advise", "fd_allocate", "fd_close", "fd_datasync", "fd_fdstat_get", "fd_fdstat_set_flags",
		"fd_fdstat_set_rights", "fd_filestat_get", "fd_filestat_set_size", "fd_filestat_set_times", "fd_pread",
		"fd_prestat_get", "fd_prestat_dir_name", "fd_pwrite", "fd_read", "fd_readdir", "fd_renumber", "fd_seek",
		"fd_sync", "fd_tell", "fd_write", "path_create_directory", "path_filestat_get", "path_filestat_set_times",
		"path_link", "path_open", "path_readlink", "path_remove_directory", "path_rename", "path_symlink",
		"path_unlink_file", "poll_oneoff", "proc_exit", "proc_raise", "sched_yield", "random_get", "sock_accept",
		"sock_recv", "sock_send", "sock_shutdown",
	} {
		wasiFunctions[n] = true
	}
}
