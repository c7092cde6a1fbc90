// Package controllers holds the cluster-wide WasmPlugin reconciler: it fetches each plugin's module,
// verifies its pin, stores it on the shared cache, validates it against the plugin's permissions and
// limits, and computes a status that kubectl, Flux and Argo CD read right from the hosts' WasmHost reports.
//
// Files by concern: wasmplugin_controller.go (setup, watches, the reconcile loop and status writes),
// wasmplugin_source.go (the source steps: resolve, fetch, store, validate), caches.go (fetches shared by
// plugins, compiled modules), wasmplugin_status.go (the pure status logic), hosts.go (live hosts from
// Leases), schedules.go (Cluster schedules), store_gc.go (the cache's garbage collection).
package controllers
