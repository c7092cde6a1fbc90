package v1alpha1

import (
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// WasmPluginSpec declares where a WebAssembly module comes from, what it may do, and how the node hosts run it.
//
// +kubebuilder:validation:XValidation:rule="!has(self.pool) || !has(self.pool.prewarm) || self.pool.prewarm <= (has(self.pool.maxIdle) ? self.pool.maxIdle : 8)",message="pool.prewarm must not exceed pool.maxIdle (default 8): prewarmed instances are idle instances"
// +kubebuilder:validation:XValidation:rule="!has(self.pool) || !has(self.pool.prewarm) || self.pool.prewarm <= (has(self.pool.maxConcurrency) ? self.pool.maxConcurrency : 10)",message="pool.prewarm must not exceed pool.maxConcurrency (default 10)"
type WasmPluginSpec struct {
	// source says where the module comes from: exactly one of http, oci or configMap.
	// +required
	Source Source `json:"source"`

	// sha256 pins the module content: 64 lowercase hex characters. When set, content with any other digest
	// is refused (Stalled, reason DigestMismatch) and the last good module keeps serving. Default: no pin.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-f0-9]{64}$')",message="sha256 must be 64 lowercase hex characters, as printed by sha256sum (without the 'sha256:' prefix)"
	SHA256 string `json:"sha256,omitempty"`

	// refreshInterval is how often a mutable source (an OCI tag, a URL without a sha256 pin) is resolved again
	// to pick up new content. Default 10m; 0 (or "0s") means never; at least 30s, at most 168h.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$|^0$')",message="refreshInterval must be a duration such as 30s, 10m or 1h, or 0 to never refresh"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$') || duration(self) == duration('0s') || (duration(self) >= duration('30s') && duration(self) <= duration('168h'))",message="refreshInterval must be 0 (never) or between 30s and 168h"
	RefreshInterval *metav1.Duration `json:"refreshInterval,omitempty"`

	// config is the plugin's configuration, read by the plugin with Extism's config_get. At most 64 keys;
	// keys at most 253 characters, values at most 64 KiB. Default: empty.
	// +optional
	// +kubebuilder:validation:MaxProperties=64
	// +kubebuilder:validation:XValidation:rule="self.all(k, size(k) > 0 && size(k) <= 253)",message="config keys must be 1 to 253 characters long"
	// +kubebuilder:validation:XValidation:rule="self.all(k, size(self[k]) <= 65536)",message="config values must be at most 64 KiB"
	Config map[string]string `json:"config,omitempty"`

	// permissions grants host services to the plugin. A host service exists for the plugin only when granted
	// here; a module that imports an ungranted one is refused (Stalled, reason PermissionDenied).
	// Default: nothing granted.
	// +optional
	Permissions *Permissions `json:"permissions,omitempty"`

	// limits bounds the memory, time and data of each call.
	// +optional
	Limits *Limits `json:"limits,omitempty"`

	// pool sizes the pool of ready instances each node host keeps for the plugin.
	// +optional
	Pool *PoolSpec `json:"pool,omitempty"`

	// placement selects the node hosts that load the plugin. Default: every host.
	// +optional
	Placement *Placement `json:"placement,omitempty"`

	// suspend stops reconciling the plugin: no fetch, no refresh. Hosts keep serving what they have.
	// Default false.
	// +optional
	Suspend bool `json:"suspend,omitempty"`

	// schedules run functions of the plugin on cron schedules. At most 16, names unique. Default none.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=16
	Schedules []Schedule `json:"schedules,omitempty"`
}

// Source says where the module comes from. Exactly one field is set.
//
// +kubebuilder:validation:XValidation:rule="(has(self.http) ? 1 : 0) + (has(self.oci) ? 1 : 0) + (has(self.configMap) ? 1 : 0) == 1",message="source must set exactly one of http, oci or configMap"
type Source struct {
	// http fetches the module from an http or https URL.
	// +optional
	HTTP *HTTPSource `json:"http,omitempty"`

	// oci pulls the module from an OCI registry: a wasm OCI artifact, or an image whose single layer holds
	// one .wasm file.
	// +optional
	OCI *OCISource `json:"oci,omitempty"`

	// configMap reads the module from a key of a ConfigMap's binaryData in the plugin's namespace.
	// Fit for small modules: a ConfigMap holds at most 1 MiB.
	// +optional
	ConfigMap *ConfigMapSource `json:"configMap,omitempty"`
}

// HTTPSource fetches a module from a URL.
type HTTPSource struct {
	// url is the module's address, http:// or https://, at most 2048 characters.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="self.startsWith('https://') || self.startsWith('http://')",message="url must start with https:// or http://"
	// +kubebuilder:validation:XValidation:rule="isURL(self) && url(self).getHostname() != ''",message="url must be an absolute URL with a host name, such as https://example.com/plugin.wasm"
	URL string `json:"url"`

	// secretRef names a Secret in the plugin's namespace holding credentials for the URL: key "token"
	// (sent as a bearer token), key "headers" (lines of "Name: value" sent with the request) and key
	// "ca.crt" (PEM certificates to trust). Default: none.
	// +optional
	SecretRef *LocalObjectReference `json:"secretRef,omitempty"`
}

// OCISource pulls a module from an OCI registry.
type OCISource struct {
	// image is the reference: registry/repository:tag or registry/repository@sha256:<digest>. Tags are
	// resolved to a digest, which status.artifact.source records. At most 512 characters.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-zA-Z0-9][a-zA-Z0-9.-]*(:[0-9]+)?(/[a-z0-9]+([._-]+[a-z0-9]+)*)+(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$')",message="image must be an OCI reference such as ghcr.io/org/plugin:v1 or ghcr.io/org/plugin@sha256:<64 hex>, with a lowercase repository"
	Image string `json:"image"`

	// pullSecretRef names a Secret of type kubernetes.io/dockerconfigjson in the plugin's namespace used to
	// authenticate to the registry. Default: anonymous.
	// +optional
	PullSecretRef *LocalObjectReference `json:"pullSecretRef,omitempty"`

	// insecure allows a plain-HTTP registry. Default false.
	// +optional
	Insecure bool `json:"insecure,omitempty"`
}

// ConfigMapSource reads a module from a ConfigMap.
type ConfigMapSource struct {
	// name of the ConfigMap in the plugin's namespace.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$')",message="configMap.name must be a valid ConfigMap name: lowercase letters, digits, '-' and '.'"
	Name string `json:"name"`

	// key in the ConfigMap's binaryData holding the module, such as plugin.wasm.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self.matches('^[-._a-zA-Z0-9]+$')",message="configMap.key must be a ConfigMap key: letters, digits, '-', '_' and '.'"
	Key string `json:"key"`
}

// LocalObjectReference names an object in the plugin's namespace.
type LocalObjectReference struct {
	// name of the object.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// Permissions grants host services to a plugin.
type Permissions struct {
	// http grants outbound HTTP requests (Extism http_request). Default: not granted.
	// +optional
	HTTP *HTTPPermission `json:"http,omitempty"`

	// vars grants per-instance variables (Extism var_get and var_set). Default: not granted.
	// +optional
	Vars *VarsPermission `json:"vars,omitempty"`

	// log sets the level of the plugin's log lines that reach the host's log. Logging is always allowed.
	// +optional
	Log *LogPermission `json:"log,omitempty"`

	// kv grants a key-value store shared by all the plugin's instances: the user host functions kv_get,
	// kv_set, kv_delete and kv_list of extism:host/user. Default: not granted.
	// +optional
	KV *KVPermission `json:"kv,omitempty"`
}

// KVScope is where a plugin's key-value store lives.
// +kubebuilder:validation:Enum=Node;Cluster
type KVScope string

// Key-value scopes.
const (
	// KVScopeNode keeps one store per plugin per node, in the node host's memory: the instances on one node
	// share it, other nodes do not see it, and it is lost when the host restarts.
	KVScopeNode KVScope = "Node"
	// KVScopeCluster keeps one store per plugin in the Redis configured for the operator, shared by every
	// node host.
	KVScopeCluster KVScope = "Cluster"
)

// KVPermission grants a key-value store to a plugin.
type KVPermission struct {
	// scope is Node (one store per node, in the host's memory) or Cluster (one store in the operator's
	// Redis). Default Node.
	// +optional
	Scope KVScope `json:"scope,omitempty"`

	// maxBytes caps the store's size: the keys plus the values of every entry. A Node store that is full
	// evicts its least recently used entries; a Cluster store refuses the write. A single entry larger
	// than maxBytes fails the plugin's call. Default 1Mi; 1 to 64Mi.
	// +optional
	// +kubebuilder:validation:XValidation:rule="quantity(string(self)).isGreaterThan(quantity('0')) && quantity(string(self)).compareTo(quantity('64Mi')) <= 0",message="maxBytes must be between 1 and 64Mi"
	MaxBytes *resource.Quantity `json:"maxBytes,omitempty"`

	// maxKeys caps the number of entries, and so what kv_list returns. Default 1024; 1 to 100000.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100000
	MaxKeys *int32 `json:"maxKeys,omitempty"`

	// defaultTTL is how long an entry set without a time to live lasts. Default 0 (until deleted or
	// evicted); otherwise 1s to 8760h. Expiry is precise to the millisecond.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$|^0$') && (self == '0' || duration(self) == duration('0s') || (duration(self) >= duration('1s') && duration(self) <= duration('8760h')))",message="defaultTTL must be 0 (no expiry) or a duration between 1s and 8760h, such as 10m"
	DefaultTTL *metav1.Duration `json:"defaultTTL,omitempty"`
}

// HTTPPermission grants outbound HTTP requests to some hosts.
type HTTPPermission struct {
	// allowedHosts are the host names the plugin may call: exact names (api.example.com), globs of one
	// leading label (*.example.org), or "*" for any host. 1 to 32 entries.
	// +required
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self.all(h, h == '*' || h.matches('^(\\\\*\\\\.)?([a-z0-9]([-a-z0-9]*[a-z0-9])?\\\\.)*[a-z0-9]([-a-z0-9]*[a-z0-9])?$'))",message="allowedHosts entries must be lowercase host names (api.example.com), a leading-label glob (*.example.org) or \"*\"; no schemes, ports, paths or inner wildcards"
	AllowedHosts []string `json:"allowedHosts"`

	// allowPrivateNetworks allows requests to loopback, private, link-local, unique-local and
	// cluster-internal addresses, which are refused otherwise (checked on the resolved address at connect
	// time and on every redirect). Default false.
	// +optional
	AllowPrivateNetworks bool `json:"allowPrivateNetworks,omitempty"`

	// maxResponseBytes caps the body of one response. Default 50Mi; 1 to 1Gi.
	// +optional
	// +kubebuilder:validation:XValidation:rule="quantity(string(self)).isGreaterThan(quantity('0')) && quantity(string(self)).compareTo(quantity('1Gi')) <= 0",message="maxResponseBytes must be between 1 and 1Gi"
	MaxResponseBytes *resource.Quantity `json:"maxResponseBytes,omitempty"`

	// timeout bounds one request, counted within the call's own timeout. Default 30s; 1ms to 5m.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) >= duration('1ms') && duration(self) <= duration('5m')",message="timeout must be a duration between 1ms and 5m, such as 10s"
	Timeout *metav1.Duration `json:"timeout,omitempty"`
}

// VarsPermission grants Extism variables, kept per instance across calls.
type VarsPermission struct {
	// maxBytes caps the total size of an instance's variables. Default 1Mi; 1 to 64Mi.
	// +optional
	// +kubebuilder:validation:XValidation:rule="quantity(string(self)).isGreaterThan(quantity('0')) && quantity(string(self)).compareTo(quantity('64Mi')) <= 0",message="maxBytes must be between 1 and 64Mi"
	MaxBytes *resource.Quantity `json:"maxBytes,omitempty"`
}

// LogLevel is the least severe level of plugin log lines that are kept.
// +kubebuilder:validation:Enum=trace;debug;info;warn;error;off
type LogLevel string

// Log levels, from the most to the least verbose.
const (
	LogLevelTrace LogLevel = "trace"
	LogLevelDebug LogLevel = "debug"
	LogLevelInfo  LogLevel = "info"
	LogLevelWarn  LogLevel = "warn"
	LogLevelError LogLevel = "error"
	LogLevelOff   LogLevel = "off"
)

// LogPermission sets the plugin's log level.
type LogPermission struct {
	// level is the least severe plugin log level kept: trace, debug, info, warn, error or off.
	// Default info.
	// +optional
	Level LogLevel `json:"level,omitempty"`
}

// Limits bounds each call of a plugin.
type Limits struct {
	// maxMemory caps everything an instance takes: its memories (exported or not), its tables at their
	// maximum, kernel memory, vars, the call's input and output and HTTP response bodies. A module whose
	// minimum memory and tables exceed it is refused; growth beyond it fails inside the plugin. Default
	// 64Mi; 64Ki to 4Gi.
	// +optional
	// +kubebuilder:validation:XValidation:rule="quantity(string(self)).compareTo(quantity('64Ki')) >= 0 && quantity(string(self)).compareTo(quantity('4Gi')) <= 0",message="maxMemory must be between 64Ki (one wasm page) and 4Gi"
	MaxMemory *resource.Quantity `json:"maxMemory,omitempty"`

	// callTimeout bounds one call, and making an instance (the module's start section and its runtime's
	// initialisers); what runs longer is stopped and its instance discarded.
	// Default 5s; 1ms to 10m.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) >= duration('1ms') && duration(self) <= duration('10m')",message="callTimeout must be a duration between 1ms and 10m, such as 5s"
	CallTimeout *metav1.Duration `json:"callTimeout,omitempty"`

	// maxInputBytes caps the input of one call. Default 4Mi; 1 to 256Mi.
	// +optional
	// +kubebuilder:validation:XValidation:rule="quantity(string(self)).isGreaterThan(quantity('0')) && quantity(string(self)).compareTo(quantity('256Mi')) <= 0",message="maxInputBytes must be between 1 and 256Mi"
	MaxInputBytes *resource.Quantity `json:"maxInputBytes,omitempty"`

	// maxOutputBytes caps the output of one call. Default 4Mi; 1 to 256Mi.
	// +optional
	// +kubebuilder:validation:XValidation:rule="quantity(string(self)).isGreaterThan(quantity('0')) && quantity(string(self)).compareTo(quantity('256Mi')) <= 0",message="maxOutputBytes must be between 1 and 256Mi"
	MaxOutputBytes *resource.Quantity `json:"maxOutputBytes,omitempty"`
}

// PoolSpec sizes a node host's pool of instances of the plugin.
type PoolSpec struct {
	// maxIdle is how many idle instances are kept ready. Default 8; 0 to 1024.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1024
	MaxIdle *int32 `json:"maxIdle,omitempty"`

	// maxConcurrency is how many calls run at once on one host; more wait up to acquireTimeout, then get
	// 429. Default 10; 1 to 1024.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1024
	MaxConcurrency *int32 `json:"maxConcurrency,omitempty"`

	// acquireTimeout is how long a call waits for a free instance. Default 5s; 0 (do not wait) to 1m.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$|^0$') && duration(self == '0' ? '0s' : self) <= duration('1m')",message="acquireTimeout must be a duration between 0s and 1m, such as 5s"
	AcquireTimeout *metav1.Duration `json:"acquireTimeout,omitempty"`

	// idleTTL is how long an unused instance stays in the pool before it is closed. Default 1m; 1s to 24h.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) >= duration('1s') && duration(self) <= duration('24h')",message="idleTTL must be a duration between 1s and 24h, such as 1m"
	IdleTTL *metav1.Duration `json:"idleTTL,omitempty"`

	// prewarm is how many idle instances are kept started ahead of calls. Default 0; at most maxIdle and
	// maxConcurrency.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1024
	Prewarm *int32 `json:"prewarm,omitempty"`

	// maxUses recycles an instance after this many calls, releasing memory a plugin holds across calls.
	// Default 0 (unlimited); 0 to 1000000000.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000000000
	MaxUses *int32 `json:"maxUses,omitempty"`
}

// Placement selects the node hosts that load a plugin.
type Placement struct {
	// nodeSelector is matched against the labels of each host's Node; all pairs must match.
	// Default: every node host. At most 32 pairs.
	// +optional
	// +kubebuilder:validation:MaxProperties=32
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`
}

// WasmPluginStatus is what the controller and the node hosts observed.
type WasmPluginStatus struct {
	// observedGeneration is the generation the controller fully handled.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Ready is always present; Reconciling and Stalled only when True; FetchFailed while a fetch
	// keeps failing.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=16
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// artifact is the stored, validated module serving this plugin (the last good one while a newer one
	// fails).
	// +optional
	Artifact *Artifact `json:"artifact,omitempty"`

	// module describes the artifact's interface.
	// +optional
	Module *ModuleInfo `json:"module,omitempty"`

	// readyNodes counts the target hosts that serve the plugin (any digest), as their WasmHost reports.
	// +optional
	ReadyNodes int32 `json:"readyNodes,omitempty"`

	// updatedNodes counts the target hosts that serve the artifact's digest for the current generation.
	// +optional
	UpdatedNodes int32 `json:"updatedNodes,omitempty"`

	// targetNodes counts the live hosts whose node matches placement.
	// +optional
	TargetNodes int32 `json:"targetNodes,omitempty"`

	// notReadyNodes lists a few target nodes that do not serve the current generation, failed ones first,
	// with what their host says; notReadyCount counts them all.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=5
	NotReadyNodes []NodeReport `json:"notReadyNodes,omitempty"`

	// notReadyCount counts the target nodes that do not serve the current generation.
	// +optional
	NotReadyCount int32 `json:"notReadyCount,omitempty"`

	// schedules has one entry per schedule that ran.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=16
	Schedules []ScheduleStatus `json:"schedules,omitempty"`

	// nodeSummary is readyNodes/targetNodes as text, for kubectl's Nodes column.
	// +optional
	// +kubebuilder:validation:MaxLength=32
	NodeSummary string `json:"nodeSummary,omitempty"`
}

// Artifact is a module stored in the shared cache.
type Artifact struct {
	// digest of the module: sha256:<64 hex>.
	// +required
	// +kubebuilder:validation:MaxLength=71
	Digest string `json:"digest"`

	// shortDigest is the first 12 hex characters of the digest, for kubectl's Digest column.
	// +optional
	// +kubebuilder:validation:MaxLength=12
	ShortDigest string `json:"shortDigest,omitempty"`

	// size of the module in bytes.
	// +required
	Size int64 `json:"size"`

	// path of the module relative to the cache root: modules/sha256/<hex>.wasm.
	// +required
	// +kubebuilder:validation:MaxLength=256
	Path string `json:"path"`

	// source is what the module was fetched from, resolved: the URL, or the image with its digest.
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	Source string `json:"source,omitempty"`

	// lastUpdateTime is when this artifact became the plugin's.
	// +optional
	LastUpdateTime *metav1.Time `json:"lastUpdateTime,omitempty"`
}

// ModuleInfo describes a module's interface.
type ModuleInfo struct {
	// exports are the functions the module exports.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=1024
	// +kubebuilder:validation:items:MaxLength=256
	Exports []string `json:"exports,omitempty"`

	// imports are the host functions the module imports, as module.name.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=1024
	// +kubebuilder:validation:items:MaxLength=512
	Imports []string `json:"imports,omitempty"`

	// wasi is true when the module imports WASI.
	// +optional
	WASI bool `json:"wasi,omitempty"`

	// abi is the plugin ABI the module speaks: extism, or none for a plain module.
	// +optional
	// +kubebuilder:validation:MaxLength=32
	ABI string `json:"abi,omitempty"`
}

// NodePhase is where a node host is with a plugin.
// +kubebuilder:validation:Enum=Loading;Ready;Failed
type NodePhase string

// Node phases.
const (
	// NodePhaseLoading means the host is loading the artifact's digest.
	NodePhaseLoading NodePhase = "Loading"
	// NodePhaseReady means the host serves calls with the entry's digest.
	NodePhaseReady NodePhase = "Ready"
	// NodePhaseFailed means the host could not load the newest digest; it serves the entry's digest if set.
	NodePhaseFailed NodePhase = "Failed"
)

// NodeReport is what one node's host says of a plugin that it does not serve at the current generation.
type NodeReport struct {
	// name of the node.
	// +required
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// phase: Loading, Ready (an older generation or digest) or Failed; Pending when the host has not
	// reported the plugin yet.
	// +required
	// +kubebuilder:validation:MaxLength=16
	Phase string `json:"phase"`

	// digest the host serves now, if any.
	// +optional
	// +kubebuilder:validation:MaxLength=71
	Digest string `json:"digest,omitempty"`

	// message says why.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Message string `json:"message,omitempty"`
}

// WasmPlugin runs a WebAssembly module, built with any Extism PDK, on the node hosts of a cluster.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=wp,categories=wasm
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Nodes",type=string,JSONPath=`.status.nodeSummary`
// +kubebuilder:printcolumn:name="Digest",type=string,JSONPath=`.status.artifact.shortDigest`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Message",type=string,priority=1,JSONPath=`.status.conditions[?(@.type=="Ready")].message`
type WasmPlugin struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the desired plugin.
	// +required
	Spec WasmPluginSpec `json:"spec"`

	// status is what the controller and node hosts observed.
	// +optional
	Status WasmPluginStatus `json:"status,omitempty"`
}

// WasmPluginList is a list of WasmPlugins.
//
// +kubebuilder:object:root=true
type WasmPluginList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []WasmPlugin `json:"items"`
}

func init() {
	SchemeBuilder.Register(&WasmPlugin{}, &WasmPluginList{})
}
