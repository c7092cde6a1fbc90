package controllers

import (
	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/types"

	wasmv1 "github.com/wasm-operator/wasm-operator/api/v1alpha1"
	"github.com/wasm-operator/wasm-operator/runtime"
)

// PluginConfig maps a WasmPlugin's spec to what the runtime grants and limits, with every default resolved.
// The controller validates modules with it and the node hosts run them with it, so both judge a module the
// same way.
func PluginConfig(obj *wasmv1.WasmPlugin, log logr.Logger) runtime.PluginConfig {
	s := &obj.Spec
	level, err := runtime.ParseLogLevel(string(s.Permissions.GetLogLevel()))
	if err != nil {
		level = runtime.LogInfo
	}
	cfg := runtime.PluginConfig{
		Name:   types.NamespacedName{Namespace: obj.Namespace, Name: obj.Name}.String(),
		Config: s.Config,
		Permissions: runtime.Permissions{
			Log: &runtime.Log{Level: level},
		},
		Limits: runtime.Limits{
			MaxMemoryBytes: s.Limits.GetMaxMemory(),
			CallTimeout:    s.Limits.GetCallTimeout(),
			MaxInputBytes:  s.Limits.GetMaxInputBytes(),
			MaxOutputBytes: s.Limits.GetMaxOutputBytes(),
		},
		Logger: log,
	}
	if s.Permissions.HTTPGranted() {
		h := s.Permissions.HTTP
		cfg.Permissions.HTTP = &runtime.HTTP{
			AllowedHosts:         h.AllowedHosts,
			AllowPrivateNetworks: h.AllowPrivateNetworks,
			MaxResponseBytes:     h.GetMaxResponseBytes(),
			Timeout:              h.GetTimeout(),
		}
	}
	if s.Permissions.VarsGranted() {
		cfg.Permissions.Vars = &runtime.Vars{MaxBytes: s.Permissions.Vars.GetMaxBytes()}
	}
	if s.Permissions.KVGranted() {
		k := s.Permissions.KV
		// The store itself is the node host's to attach: the controller only checks imports.
		cfg.Permissions.KV = &runtime.KV{MaxBytes: k.GetMaxBytes(), MaxKeys: int(k.GetMaxKeys()), DefaultTTL: k.GetDefaultTTL()}
	}
	return cfg
}
