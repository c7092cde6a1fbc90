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
//		Targets: targets, // Ready hosts serving that generation: WasmHost spec.nodeName and status.endpoint
//		Client:  client,  // *http.Client whose TLS trusts the hosts' CA
//		Token:   token,   // a bearer token of the hosts' audience (TokenRequest, cached until near expiry)
//	} // AttemptTimeout: DefaultAttemptTimeout, above the longest callTimeout
//	runner, err := scheduler.New(scheduler.Options{
//		Scope: wasmv1.ScheduleScopeCluster, LeaderElection: true, Fire: firer.Fire,
//		Registerer: ctrlmetrics.Registry,
//		Record:     func(key types.NamespacedName, _ wasmv1.ScheduleStatus) { events <- event.GenericEvent{...key...} },
//		OnFailure:  func(j scheduler.Job, r scheduler.Result) { recorder.Eventf(plugin, "Warning", "ScheduleFailed", ...) },
//	})
//	mgr.Add(runner)
//
// In Reconcile, once the artifact step passed: runner.Set(req.NamespacedName, obj.Generation,
// obj.Spec.Suspend, obj.Spec.Schedules, obj.Status.Schedules). Set ignores Node schedules and is cheap and
// idempotent: call it on every reconcile. Its error names the schedules that do not parse, as
// schedule.CheckSpec does (which reports them as Stalled): the others run all the same. On deletion (or not
// found) runner.Remove(req.NamespacedName); also while the plugin cannot be served at its generation (Stalled
// on its module), since its ticks could only fail for want of a host: status keeps the last ticks, and the
// next Set resumes from them.
//
// Status: status.schedules is runner.Statuses(key) (the Cluster schedules that ran, sorted by name, with
// lastSuccessfulTime kept across restarts) plus the Node schedules' entries the hosts report. Record runs
// on the Runner's goroutine and must not block: have it enqueue a reconcile of the key (a source.Channel of
// GenericEvents) and let the status step call Statuses, so that status is computed in one place. OnFailure
// gets the Job and Result (message already cut) for a Warning Event (reason such as ScheduleFailed).
//
// Targets lists, from the informer cache, the WasmHosts whose node's Lease is live
// (hostcontract.LeaseLive) and whose status.plugins entry for the key has that generation and phase Ready:
// Target{Node: spec.nodeName, URL: status.endpoint}. Token returns a token of the hosts' audience for the
// controller's ServiceAccount, which needs RBAC create on wasmplugins/call.
//
// Host (manager host), for the plugins placed on its node:
//
//	runner, _ := scheduler.New(scheduler.Options{Scope: wasmv1.ScheduleScopeNode, Fire: scheduler.NodeFirer(node, invoker), Record: ...})
//	mgr.Add(runner)
//
// Set when the plugin's generation is loaded and Ready on the node, Remove when it is unloaded. A host may not
// write the WasmPlugin, so its Record belongs in its WasmHost entry for the plugin, which has no field for
// it yet (until then, metrics and OnFailure Events only, and last nil: a restarted host starts its Node
// schedules from then).
//
// # Semantics
//
// Each tick runs at most once per Runner, and at least once in the cluster while a host answers: the status
// is recorded after the run, so a tick whose run was cut by a restart or a leader change has no
// lastScheduleTime and runs again under the next leader if startingDeadline allows; and a host that ran the
// function but whose answer was lost (an attempt timeout) is followed by a run on another host. Only the
// most recent missed tick runs; the others count as missed (at most schedule.MaxMissed at a time). A
// schedule first seen without status starts then: nothing is missed before it. Suspended ticks pass: they
// neither run later nor count as missed. The function's output is discarded.
//
// Why does a new expression start from now, when a CronJob keeps its lastScheduleTime? Because the ticks of
// the old expression say nothing of the new one's: keeping them would run a tick of the new expression at
// once, which nobody asked for. Other changes (input, function, policy) keep the last tick.
//
// Why is a 504 not retried on another host, although the host answered with a 5xx? It is the plugin's own
// callTimeout: the function ran there, and running it elsewhere would repeat its effects and likely time out
// again. It is a result (ReturnCodeNotRun, the host's message), like a plugin error.
package scheduler
