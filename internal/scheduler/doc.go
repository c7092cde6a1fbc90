// Package scheduler fires the spec.schedules of WasmPlugins: a Runner keeps the schedules of many plugins,
// one timer loop per schedule asking internal/schedule's Due when to run, and calls a FireFunc for each
// tick, with concurrencyPolicy, suspend, startingDeadline after a restart, a per-run timeout, status through
// a callback and Prometheus metrics. It knows neither the API server nor wazero: the controller and the
// hosts give it the schedules and the way to run a job, and write the status it reports.
//
// Two Runners exist. The controller's (Scope Cluster, LeaderElection true) fires each Cluster tick once in
// the cluster through a ClusterFirer, which calls one Ready host's call API and fails over once. Each
// host's (Scope Node, LeaderElection false) fires its Node ticks locally through NodeFirer.
//
// # Wiring
//
// Controller (manager controller):
//
//	firer := &scheduler.ClusterFirer{
//		Targets: targets, // Ready hosts serving that generation: Node and https://<pod IP>:<call port>
//		Client:  client,  // *http.Client whose TLS trusts the hosts' CA
//		Token:   token,   // a bearer token of the hosts' audience (TokenRequest, cached until near expiry)
//		AttemptTimeout: 11 * time.Minute, // above the longest callTimeout
//	}
//	runner, err := scheduler.New(scheduler.Options{
//		Scope: wasmv1.ScheduleScopeCluster, LeaderElection: true, Fire: firer.Fire,
//		Registerer: ctrlmetrics.Registry,
//		Record:     func(key types.NamespacedName, _ wasmv1.ScheduleStatus) { events <- event.GenericEvent{...key...} },
//		OnFailure:  func(j scheduler.Job, r scheduler.Result) { recorder.Eventf(plugin, "Warning", "ScheduleFailed", ...) },
//	})
//	mgr.Add(runner)
//
// In Reconcile, once the plugin's artifact is Ready for its generation (not when Stalled, and after
// schedule.CheckSpec passed): runner.Set(req.NamespacedName, obj.Generation, obj.Spec.Suspend,
// obj.Spec.Schedules, obj.Status.Schedules). Set ignores Node schedules and is cheap and idempotent, so it may
// be called on every reconcile. On deletion (or not found): runner.Remove(req.NamespacedName). When
// computing status: status.schedules = runner.Statuses(key) merged with the Node schedules' entries (the
// Runner returns only the schedules that ran, sorted by name; keep entries of other schedules out). Record
// runs on the Runner's goroutine and must not block: enqueue a reconcile of the key (a source.Channel of
// GenericEvents) and let the status step call Statuses, so that status is computed in one place. The
// targets function reads the hosts' WasmHost objects (live Lease, the plugin's entry Ready at that
// generation) and the host pods' addresses.
//
// Host (manager host), for the plugins placed on its node:
//
//	runner, _ := scheduler.New(scheduler.Options{Scope: wasmv1.ScheduleScopeNode, Fire: scheduler.NodeFirer(node, invoker), Record: ...})
//	mgr.Add(runner)
//
// Set when the plugin's generation is loaded and Ready on the node, Remove when it is unloaded. A host may not
// write the WasmPlugin, so its Record goes to its WasmHost entry for the plugin (or to metrics only); last
// then comes from that entry.
//
// # Semantics
//
// A tick runs at least once per process that fires it: the status is recorded after the run, so a tick
// whose run was cut by a restart or a leader change runs again under the next leader if startingDeadline
// allows. Only the most recent missed tick runs; the others count as missed. A schedule first seen without
// status starts from then: nothing is missed before it.
package scheduler
