// Package controllers holds the cluster-wide WasmPlugin reconciler: it fetches each plugin's module,
// verifies its pin, stores it on the shared cache, validates it against the plugin's permissions and
// limits, and computes a status that kubectl, Flux and Argo CD read right. The status logic is in pure
// functions in wasmplugin_status.go.
package controllers
