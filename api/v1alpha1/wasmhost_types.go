package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// WasmHost is one node host's report of the plugins it is responsible for, named after its node and written
// only by the host that holds the node's Lease. The controller aggregates these objects into each
// WasmPlugin's status, so a host's state costs one write of its own object when it changes, never a write
// into every plugin it serves (RATIONALE.md, "Why per-node objects?"). It holds no counters: calls, pools
// and latencies are the host's Prometheus metrics.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=wh,categories=wasm
// +kubebuilder:printcolumn:name="Node",type=string,JSONPath=`.spec.nodeName`
// +kubebuilder:printcolumn:name="Plugins",type=integer,JSONPath=`.status.pluginCount`
// +kubebuilder:printcolumn:name="Ready",type=integer,JSONPath=`.status.readyCount`
// +kubebuilder:printcolumn:name="Failed",type=integer,JSONPath=`.status.failedCount`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Holder",type=string,priority=1,JSONPath=`.status.holder`
// +kubebuilder:validation:XValidation:rule="self.metadata.name == self.spec.nodeName",message="a WasmHost is named after its node: metadata.name must equal spec.nodeName"
type WasmHost struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec names the node.
	// +required
	Spec WasmHostSpec `json:"spec"`

	// status is what the node's host reports.
	// +optional
	Status WasmHostStatus `json:"status,omitempty"`
}

// WasmHostSpec names the node a WasmHost reports on.
type WasmHostSpec struct {
	// nodeName is the node the host runs on; the object's name.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="nodeName is immutable"
	NodeName string `json:"nodeName"`
}

// WasmHostStatus is a node host's view of the plugins placed on its node.
type WasmHostStatus struct {
	// holder is the identity of the host process that wrote this report (its pod's name), the holder of the
	// node's Lease when it wrote it.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	Holder string `json:"holder,omitempty"`

	// endpoint is the base URL of the host's call API, such as https://10.0.0.5:8443.
	// +optional
	// +kubebuilder:validation:MaxLength=512
	Endpoint string `json:"endpoint,omitempty"`

	// plugins has one entry per plugin placed on the node, sorted by namespace and name. The host writes
	// the list whole (it is its only writer), so it is atomic: the server's field tracking records one
	// field for it, not a key per entry, which kept a report of 100 plugins half again as large.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=4096
	Plugins []HostPlugin `json:"plugins,omitempty"`

	// pluginCount is the number of entries, for kubectl's Plugins column.
	// +optional
	PluginCount int32 `json:"pluginCount"`

	// readyCount counts the Ready entries.
	// +optional
	ReadyCount int32 `json:"readyCount"`

	// failedCount counts the Failed entries.
	// +optional
	FailedCount int32 `json:"failedCount"`
}

// HostPlugin is one host's state of one plugin.
type HostPlugin struct {
	// namespace of the WasmPlugin.
	// +required
	// +kubebuilder:validation:MaxLength=63
	Namespace string `json:"namespace"`

	// name of the WasmPlugin.
	// +required
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// generation of the WasmPlugin spec the host serves (or loads, or failed to load).
	// +optional
	Generation int64 `json:"generation,omitempty"`

	// digest the host serves now; empty when it serves none.
	// +optional
	// +kubebuilder:validation:MaxLength=71
	Digest string `json:"digest,omitempty"`

	// phase: Loading, Ready or Failed.
	// +required
	Phase NodePhase `json:"phase"`

	// message says why the host is not Ready.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Message string `json:"message,omitempty"`

	// since is when the entry took this phase, digest and generation.
	// +optional
	Since *metav1.Time `json:"since,omitempty"`

	// failingSchedules are the plugin's Node schedules whose last run on this host failed. The host
	// rewrites them only when a schedule starts failing, recovers, or fails with another return code, not
	// at each run.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	FailingSchedules []HostScheduleFailure `json:"failingSchedules,omitempty"`
}

// HostScheduleFailure is a Node schedule whose last run on one host failed.
type HostScheduleFailure struct {
	// name of the schedule.
	// +required
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`

	// returnCode of the last run (-1: no function returned one, for instance a timeout).
	// +optional
	ReturnCode int32 `json:"returnCode"`

	// message of the first failed run in a row, cut to 256 characters.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	Message string `json:"message,omitempty"`

	// since is the tick of the first failed run in a row.
	// +optional
	Since *metav1.Time `json:"since,omitempty"`
}

// WasmHostList is a list of WasmHosts.
//
// +kubebuilder:object:root=true
type WasmHostList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []WasmHost `json:"items"`
}

func init() {
	SchemeBuilder.Register(&WasmHost{}, &WasmHostList{})
}
