package v1alpha1

// Condition types of a WasmPlugin. They follow the kstatus conventions, so kubectl wait, Flux and Argo CD
// read them right: Ready is always present; Reconciling and Stalled are present only while True.
const (
	// ConditionReady is True when the artifact is stored and valid for the current generation and every
	// live node host that matches placement serves its digest.
	ConditionReady = "Ready"

	// ConditionReconciling is True while the controller or the hosts are working towards the current
	// generation (fetching, validating, hosts loading).
	ConditionReconciling = "Reconciling"

	// ConditionStalled is True when progress needs a change by the user, such as a new pin, a granted
	// permission or a reachable source. Its reason says which.
	ConditionStalled = "Stalled"

	// ConditionFetchFailed is True while fetching the source fails for a reason that may pass (network,
	// registry 5xx); the controller retries with backoff and the last good artifact keeps serving.
	ConditionFetchFailed = "FetchFailed"
)

// Condition reasons. Each Stalled reason names what the user must change.
const (
	// ReasonSucceeded: the plugin is ready on every target node.
	ReasonSucceeded = "Succeeded"
	// ReasonProgressing: fetching, validating or waiting for the hosts to load.
	ReasonProgressing = "Progressing"
	// ReasonWaitingForNodes: the artifact is valid; some target hosts do not serve it yet.
	ReasonWaitingForNodes = "WaitingForNodes"
	// ReasonNodesFailed: some target hosts failed to load the artifact.
	ReasonNodesFailed = "NodesFailed"
	// ReasonNoHosts: the artifact is valid but no live host runs on a node the placement selects, so
	// nothing serves the plugin: no host registered, every host's Lease expired, or the nodeSelector
	// matches no host's node.
	ReasonNoHosts = "NoHosts"
	// ReasonSuspended: spec.suspend is true.
	ReasonSuspended = "Suspended"

	// ReasonDigestMismatch: the fetched content does not match spec.sha256. Fix the pin or the source.
	ReasonDigestMismatch = "DigestMismatch"
	// ReasonInvalidModule: the content is not a usable WebAssembly module (not wasm, does not compile,
	// no callable export, memory minimum above limits.maxMemory).
	ReasonInvalidModule = "InvalidModule"
	// ReasonModuleTooComplex: compiling the module would go over a compile limit of the controller and
	// hosts (function size, function count, locals, compile memory or time); the message names the limit
	// and its flag. Use a smaller module or raise the limit.
	ReasonModuleTooComplex = "ModuleTooComplex"
	// ReasonPermissionDenied: the module imports a host function whose permission is not granted in
	// spec.permissions; the message names the import and the permission.
	ReasonPermissionDenied = "PermissionDenied"
	// ReasonInvalidSchedule: a spec.schedules entry passed the API server's checks but cannot run: a cron
	// field out of range, an unknown time zone, or a function the module does not export. The message
	// names the schedule.
	ReasonInvalidSchedule = "InvalidSchedule"
	// ReasonSourceNotFound: the URL, image, ConfigMap, key or Secret does not exist.
	ReasonSourceNotFound = "SourceNotFound"
	// ReasonTooLarge: the module is larger than the fetch size cap.
	ReasonTooLarge = "TooLarge"
	// ReasonInvalidSource: the source's settings or its Secret are malformed (a CA that is not PEM, a
	// headers line that is not "Name: value", a pull secret that is not a dockerconfigjson).
	ReasonInvalidSource = "InvalidSource"
	// ReasonUnauthorized: the source refused the credentials, or they are missing.
	ReasonUnauthorized = "Unauthorized"

	// ReasonFetchFailed: fetching failed for a reason that may pass; retried with backoff.
	ReasonFetchFailed = "FetchFailed"
)

// WasmPluginFinalizer was set on every WasmPlugin by earlier versions; it had no cleanup left to do (the
// store's GC finds unreferenced modules), and the controller removes it where it finds it.
const WasmPluginFinalizer = "wasm-operator.dev/finalizer"
