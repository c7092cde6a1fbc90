package wazero

import (
	"encoding/hex"
	"path"
	goruntime "runtime"

	"github.com/tetratelabs/wazero/internal/engine/wazevo"
	"github.com/tetratelabs/wazero/internal/version"
	"github.com/tetratelabs/wazero/internal/wasm"
)

// CompiledEntryPath is the path, relative to the folder given to NewCompilationCacheWithDir, of the file
// the compiler keeps binary's code in on this machine, for a runtime with the compiler,
// WithCloseOnContextDone(ensureTermination) and no function listeners: so that a program that lets
// another process fill a cache can check that it wrote that entry and nothing else.
func CompiledEntryPath(binary []byte, ensureTermination bool) string {
	m := &wasm.Module{}
	m.AssignModuleID(binary, nil, ensureTermination)
	key := wazevo.FileCacheKey(m)
	return path.Join("wazero-"+version.GetWazeroVersion()+"-"+goruntime.GOARCH+"-"+goruntime.GOOS, hex.EncodeToString(key[:]))
}
