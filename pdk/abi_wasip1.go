//go:build wasip1

package pdk

// Host functions of the Extism kernel and its host services. Offsets and
// lengths are positions in kernel memory, not in the plugin's memory; an
// offset of 0 means "none".

//go:wasmimport extism:host/env alloc
func hostAlloc(length uint64) uint64

//go:wasmimport extism:host/env free
func hostFree(offset uint64)

//go:wasmimport extism:host/env length
func hostLength(offset uint64) uint64

//go:wasmimport extism:host/env load_u8
func hostLoadU8(offset uint64) uint32

//go:wasmimport extism:host/env load_u64
func hostLoadU64(offset uint64) uint64

//go:wasmimport extism:host/env store_u8
func hostStoreU8(offset uint64, value uint32)

//go:wasmimport extism:host/env store_u64
func hostStoreU64(offset uint64, value uint64)

//go:wasmimport extism:host/env input_length
func hostInputLength() uint64

//go:wasmimport extism:host/env input_load_u8
func hostInputLoadU8(offset uint64) uint32

//go:wasmimport extism:host/env input_load_u64
func hostInputLoadU64(offset uint64) uint64

//go:wasmimport extism:host/env output_set
func hostOutputSet(offset, length uint64)

//go:wasmimport extism:host/env error_set
func hostErrorSet(offset uint64)

//go:wasmimport extism:host/env config_get
func hostConfigGet(keyOffset uint64) uint64

//go:wasmimport extism:host/env var_get
func hostVarGet(keyOffset uint64) uint64

//go:wasmimport extism:host/env var_set
func hostVarSet(keyOffset, valueOffset uint64)

//go:wasmimport extism:host/env http_request
func hostHTTPRequest(requestOffset, bodyOffset uint64) uint64

//go:wasmimport extism:host/env http_status_code
func hostHTTPStatusCode() int32

//go:wasmimport extism:host/env http_headers
func hostHTTPHeaders() uint64

//go:wasmimport extism:host/env get_log_level
func hostGetLogLevel() int32

//go:wasmimport extism:host/env log_trace
func hostLogTrace(offset uint64)

//go:wasmimport extism:host/env log_debug
func hostLogDebug(offset uint64)

//go:wasmimport extism:host/env log_info
func hostLogInfo(offset uint64)

//go:wasmimport extism:host/env log_warn
func hostLogWarn(offset uint64)

//go:wasmimport extism:host/env log_error
func hostLogError(offset uint64)
