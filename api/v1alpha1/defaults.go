package v1alpha1

import (
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Defaults of the optional fields. The API server stores what the user wrote; these getters resolve what
// is absent, so a GitOps tool never sees the server add fields it did not apply.
const (
	DefaultRefreshInterval      = 10 * time.Minute
	DefaultHTTPMaxResponseBytes = 50 << 20
	DefaultHTTPTimeout          = 30 * time.Second
	DefaultVarsMaxBytes         = 1 << 20
	DefaultLogLevel             = LogLevelInfo
	DefaultKVScope              = KVScopeNode
	DefaultKVMaxBytes           = 1 << 20
	DefaultKVMaxKeys            = 1024
	DefaultKVDefaultTTL         = 0
	DefaultMaxMemory            = 64 << 20
	DefaultCallTimeout          = 5 * time.Second
	DefaultMaxInputBytes        = 4 << 20
	DefaultMaxOutputBytes       = 4 << 20
	DefaultPoolMaxIdle          = 8
	DefaultPoolMaxConcurrency   = 10
	DefaultPoolAcquireTimeout   = 5 * time.Second
	DefaultPoolIdleTTL          = time.Minute
	DefaultPoolPrewarm          = 0
	DefaultPoolMaxUses          = 0
)

func duration(d *metav1.Duration, def time.Duration) time.Duration {
	if d == nil {
		return def
	}
	return d.Duration
}

func quantity(q *resource.Quantity, def int64) int64 {
	if q == nil {
		return def
	}
	return q.Value()
}

func int32Or(p *int32, def int32) int32 {
	if p == nil {
		return def
	}
	return *p
}

// GetRefreshInterval is spec.refreshInterval or its default; 0 means never.
func (s *WasmPluginSpec) GetRefreshInterval() time.Duration {
	return duration(s.RefreshInterval, DefaultRefreshInterval)
}

// HTTPGranted reports whether outbound HTTP is granted.
func (p *Permissions) HTTPGranted() bool { return p != nil && p.HTTP != nil }

// VarsGranted reports whether variables are granted.
func (p *Permissions) VarsGranted() bool { return p != nil && p.Vars != nil }

// KVGranted reports whether the key-value store is granted.
func (p *Permissions) KVGranted() bool { return p != nil && p.KV != nil }

// GetScope is scope or its default, Node.
func (k *KVPermission) GetScope() KVScope {
	if k == nil || k.Scope == "" {
		return DefaultKVScope
	}
	return k.Scope
}

// GetMaxBytes is maxBytes or its default.
func (k *KVPermission) GetMaxBytes() int64 {
	if k == nil {
		return DefaultKVMaxBytes
	}
	return quantity(k.MaxBytes, DefaultKVMaxBytes)
}

// GetMaxKeys is maxKeys or its default.
func (k *KVPermission) GetMaxKeys() int32 {
	if k == nil {
		return DefaultKVMaxKeys
	}
	return int32Or(k.MaxKeys, DefaultKVMaxKeys)
}

// GetDefaultTTL is defaultTTL or its default; 0 means no expiry.
func (k *KVPermission) GetDefaultTTL() time.Duration {
	if k == nil {
		return DefaultKVDefaultTTL
	}
	return duration(k.DefaultTTL, DefaultKVDefaultTTL)
}

// GetLogLevel is permissions.log.level or its default.
func (p *Permissions) GetLogLevel() LogLevel {
	if p == nil || p.Log == nil || p.Log.Level == "" {
		return DefaultLogLevel
	}
	return p.Log.Level
}

// GetMaxResponseBytes is maxResponseBytes or its default.
func (h *HTTPPermission) GetMaxResponseBytes() int64 {
	if h == nil {
		return DefaultHTTPMaxResponseBytes
	}
	return quantity(h.MaxResponseBytes, DefaultHTTPMaxResponseBytes)
}

// GetTimeout is timeout or its default.
func (h *HTTPPermission) GetTimeout() time.Duration {
	if h == nil {
		return DefaultHTTPTimeout
	}
	return duration(h.Timeout, DefaultHTTPTimeout)
}

// GetMaxBytes is maxBytes or its default.
func (v *VarsPermission) GetMaxBytes() int64 {
	if v == nil {
		return DefaultVarsMaxBytes
	}
	return quantity(v.MaxBytes, DefaultVarsMaxBytes)
}

// GetMaxMemory is maxMemory in bytes or its default.
func (l *Limits) GetMaxMemory() int64 {
	if l == nil {
		return DefaultMaxMemory
	}
	return quantity(l.MaxMemory, DefaultMaxMemory)
}

// GetCallTimeout is callTimeout or its default.
func (l *Limits) GetCallTimeout() time.Duration {
	if l == nil {
		return DefaultCallTimeout
	}
	return duration(l.CallTimeout, DefaultCallTimeout)
}

// GetMaxInputBytes is maxInputBytes or its default.
func (l *Limits) GetMaxInputBytes() int64 {
	if l == nil {
		return DefaultMaxInputBytes
	}
	return quantity(l.MaxInputBytes, DefaultMaxInputBytes)
}

// GetMaxOutputBytes is maxOutputBytes or its default.
func (l *Limits) GetMaxOutputBytes() int64 {
	if l == nil {
		return DefaultMaxOutputBytes
	}
	return quantity(l.MaxOutputBytes, DefaultMaxOutputBytes)
}

// GetMaxIdle is maxIdle or its default.
func (p *PoolSpec) GetMaxIdle() int32 {
	if p == nil {
		return DefaultPoolMaxIdle
	}
	return int32Or(p.MaxIdle, DefaultPoolMaxIdle)
}

// GetMaxConcurrency is maxConcurrency or its default.
func (p *PoolSpec) GetMaxConcurrency() int32 {
	if p == nil {
		return DefaultPoolMaxConcurrency
	}
	return int32Or(p.MaxConcurrency, DefaultPoolMaxConcurrency)
}

// GetAcquireTimeout is acquireTimeout or its default.
func (p *PoolSpec) GetAcquireTimeout() time.Duration {
	if p == nil {
		return DefaultPoolAcquireTimeout
	}
	return duration(p.AcquireTimeout, DefaultPoolAcquireTimeout)
}

// GetIdleTTL is idleTTL or its default.
func (p *PoolSpec) GetIdleTTL() time.Duration {
	if p == nil {
		return DefaultPoolIdleTTL
	}
	return duration(p.IdleTTL, DefaultPoolIdleTTL)
}

// GetPrewarm is prewarm or its default.
func (p *PoolSpec) GetPrewarm() int32 {
	if p == nil {
		return DefaultPoolPrewarm
	}
	return int32Or(p.Prewarm, DefaultPoolPrewarm)
}

// GetMaxUses is maxUses or its default (0: unlimited).
func (p *PoolSpec) GetMaxUses() int32 {
	if p == nil {
		return DefaultPoolMaxUses
	}
	return int32Or(p.MaxUses, DefaultPoolMaxUses)
}

// GetNodeSelector is placement.nodeSelector; nil selects every node.
func (p *Placement) GetNodeSelector() map[string]string {
	if p == nil {
		return nil
	}
	return p.NodeSelector
}
