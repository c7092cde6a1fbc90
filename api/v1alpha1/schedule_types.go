package v1alpha1

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ScheduleScope is where a schedule's ticks run.
// +kubebuilder:validation:Enum=Cluster;Node
type ScheduleScope string

// Schedule scopes.
const (
	// ScheduleScopeCluster runs each tick once in the cluster, on one host that serves the plugin's current
	// generation, fired by the controller's leader through the call API.
	ScheduleScopeCluster ScheduleScope = "Cluster"
	// ScheduleScopeNode runs each tick on every host that serves the plugin.
	ScheduleScopeNode ScheduleScope = "Node"
)

// ConcurrencyPolicy says what a tick does while the previous run of the same schedule is still running.
// +kubebuilder:validation:Enum=Forbid;Allow
type ConcurrencyPolicy string

// Concurrency policies.
const (
	// ConcurrencyForbid skips the tick (counted as missed).
	ConcurrencyForbid ConcurrencyPolicy = "Forbid"
	// ConcurrencyAllow runs it beside the previous run.
	ConcurrencyAllow ConcurrencyPolicy = "Allow"
)

// Schedule runs a function of the plugin on a cron schedule.
type Schedule struct {
	// name identifies the schedule in status, events and metrics: a DNS label, unique in the plugin.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",message="schedule names must be DNS labels: lowercase letters, digits and '-'"
	Name string `json:"name"`

	// schedule is a cron expression of five fields (minute hour day-of-month month day-of-week, such as
	// "*/5 * * * *"), a descriptor (@yearly, @monthly, @weekly, @daily, @hourly) or "@every <duration>" of
	// at least 1s (such as "@every 30s"). At most 128 characters.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:XValidation:rule="self.matches('^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|@every ([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+|[0-9A-Za-z*?/,-]+( [0-9A-Za-z*?/,-]+){4})$')",message="schedule must be a cron expression of five fields such as \"*/5 * * * *\", a descriptor such as @hourly, or \"@every 30s\""
	// +kubebuilder:validation:XValidation:rule="!self.matches('^@every ([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$') || duration(self.substring(7)) >= duration('1s')",message="@every needs a duration of at least 1s"
	Schedule string `json:"schedule"`

	// timeZone is the IANA time zone the schedule is read in, such as Europe/Paris. Default UTC.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:XValidation:rule="self.matches('^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$')",message="timeZone must be an IANA time zone name such as Europe/Paris or UTC"
	TimeZone string `json:"timeZone,omitempty"`

	// function is the export to call.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	Function string `json:"function"`

	// input is the call's input. Default empty; at most 64 KiB.
	// +optional
	// +kubebuilder:validation:MaxLength=65536
	Input string `json:"input,omitempty"`

	// scope is Cluster (each tick runs once, on one host) or Node (on every host serving the plugin).
	// Default Cluster.
	// +optional
	Scope ScheduleScope `json:"scope,omitempty"`

	// concurrencyPolicy is Forbid (a tick is skipped while the last run still runs) or Allow. Default
	// Forbid.
	// +optional
	ConcurrencyPolicy ConcurrencyPolicy `json:"concurrencyPolicy,omitempty"`

	// startingDeadline is how late a tick may still start, after a restart or failover: a tick older than
	// that is skipped and counted as missed, as for a CronJob. Default: none (the most recent missed tick
	// runs); 1s to 24h.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) >= duration('1s') && duration(self) <= duration('24h')",message="startingDeadline must be a duration between 1s and 24h, such as 1m"
	StartingDeadline *metav1.Duration `json:"startingDeadline,omitempty"`

	// suspend stops the schedule's ticks. Default false.
	// +optional
	Suspend bool `json:"suspend,omitempty"`
}

// ScheduleStatus is what the last ticks of one schedule did.
type ScheduleStatus struct {
	// name of the schedule.
	// +required
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`

	// lastScheduleTime is the tick that ran last.
	// +optional
	LastScheduleTime *metav1.Time `json:"lastScheduleTime,omitempty"`

	// lastSuccessfulTime is the last tick whose run returned 0.
	// +optional
	LastSuccessfulTime *metav1.Time `json:"lastSuccessfulTime,omitempty"`

	// lastResult is the result of the last run. For a Node schedule it is the failure of one of the
	// failing nodes (hosts report failures, not each run), and absent while none fails.
	// +optional
	LastResult *ScheduleResult `json:"lastResult,omitempty"`

	// failingNodes counts, for a Node schedule, the hosts whose last run of it failed.
	// +optional
	FailingNodes int32 `json:"failingNodes,omitempty"`
}

// ScheduleResult is the result of one run of a schedule.
type ScheduleResult struct {
	// returnCode is the function's return code; 0 is success.
	// +optional
	ReturnCode int32 `json:"returnCode"`

	// message is the plugin's error text or the host's reason, cut to 1024 characters.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Message string `json:"message,omitempty"`

	// duration of the run.
	// +optional
	Duration *metav1.Duration `json:"duration,omitempty"`

	// node is the host that ran it.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	Node string `json:"node,omitempty"`
}

// GetScope is scope or its default, Cluster.
func (s *Schedule) GetScope() ScheduleScope {
	if s.Scope == "" {
		return ScheduleScopeCluster
	}
	return s.Scope
}

// GetConcurrencyPolicy is concurrencyPolicy or its default, Forbid.
func (s *Schedule) GetConcurrencyPolicy() ConcurrencyPolicy {
	if s.ConcurrencyPolicy == "" {
		return ConcurrencyForbid
	}
	return s.ConcurrencyPolicy
}

// GetStartingDeadline is startingDeadline; 0 means none.
func (s *Schedule) GetStartingDeadline() time.Duration {
	return duration(s.StartingDeadline, 0)
}
