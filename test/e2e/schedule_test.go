package e2e

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wasmv1 "github.com/wasm-operator/wasm-operator/api/v1alpha1"
	"github.com/wasm-operator/wasm-operator/internal/devstack"
)

// TestSchedules: a Cluster schedule runs once per tick with two hosts (the controller calls one host's
// call API per tick), its status shows the last result, and it moves to the other host when the one it
// ran on is lost; a Node schedule runs on each host, and one that fails is in the plugin's status through the
// hosts' reports, which change when it starts failing and not at each run.
func TestSchedules(t *testing.T) {
	ctx := context.Background()
	s, _ := startStack(t, "controller", "host-node-a", "host-node-b")
	if _, err := s.StartController(); err != nil {
		t.Fatal(err)
	}
	nodes := map[string]*node{}
	for _, name := range []string{"node-a", "node-b"} {
		addr, err := devstack.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		n := &node{name: name, addr: addr}
		if n.proc, err = s.StartHost(name, addr, "--lease-duration=4s"); err != nil {
			t.Fatal(err)
		}
		nodes[name] = n
	}
	scraper := metricsToken(t, s, kubernetes.NewForConfigOrDie(s.Config))
	// The greet function's calls on a host, from its metrics: only the schedule calls it here.
	calls := func(n *node, plugin string) int {
		_, m := getMetrics(t, n.addr, scraper)
		re := regexp.MustCompile(`wasm_operator_host_calls_total\{function="greet",name="` + plugin + `",namespace="default",outcome="ok"\} (\d+)`)
		if sub := re.FindStringSubmatch(m); sub != nil {
			v, _ := strconv.Atoi(sub[1])
			return v
		}
		return 0
	}
	p := &wasmv1.WasmPlugin{ObjectMeta: metav1.ObjectMeta{Name: "greet", Namespace: "default"},
		Spec: wasmv1.WasmPluginSpec{
			Source:    wasmv1.Source{HTTP: &wasmv1.HTTPSource{URL: s.PluginsURL + "/greet.wasm"}},
			Schedules: []wasmv1.Schedule{{Name: "tick", Schedule: "@every 2s", Function: "greet", Input: "cron"}},
		}}
	if err := s.Client.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	last := func(p *wasmv1.WasmPlugin) *wasmv1.ScheduleStatus {
		for i := range p.Status.Schedules {
			if p.Status.Schedules[i].Name == "tick" {
				return &p.Status.Schedules[i]
			}
		}
		return nil
	}
	// Ticks before the hosts load the plugin fail (no Ready host, return code -1, no call); the first
	// success starts the count.
	got := waitPlugin(t, s, "greet", "the first tick ran", func(p *wasmv1.WasmPlugin) bool {
		st := last(p)
		return st != nil && st.LastSuccessfulTime != nil && st.LastSuccessfulTime.Equal(st.LastScheduleTime)
	})
	first := last(got).LastScheduleTime.Time
	if r := last(got).LastResult; r == nil || r.ReturnCode != 0 || r.Message != "" || r.Node == "" || last(got).LastSuccessfulTime == nil {
		t.Fatalf("the first run's status: %+v", last(got))
	}

	t.Run("once per tick with two hosts", func(t *testing.T) {
		waitPlugin(t, s, "greet", "four ticks ran", func(p *wasmv1.WasmPlugin) bool {
			return last(p).LastScheduleTime.Sub(first) >= 6*time.Second
		})
		update(t, s, "greet", func(p *wasmv1.WasmPlugin) { p.Spec.Schedules[0].Suspend = true })
		// Once suspended, no tick runs: wait until the status stops moving, then count.
		var stopped time.Time
		eventually(t, wait, func() (bool, string) {
			p := waitPlugin(t, s, "greet", "status", func(*wasmv1.WasmPlugin) bool { return true })
			at := last(p).LastScheduleTime.Time
			if at.Equal(stopped) {
				return true, ""
			}
			stopped = at
			time.Sleep(3 * time.Second) // more than a tick: a tick after the suspension would show
			return false, "the schedule still runs at " + at.String()
		})
		ticks := int(stopped.Sub(first)/(2*time.Second)) + 1
		ran := calls(nodes["node-a"], "greet") + calls(nodes["node-b"], "greet")
		if ran != ticks {
			t.Fatalf("%d calls of greet on the hosts for %d ticks from %s to %s: want one per tick", ran, ticks, first, stopped)
		}
		update(t, s, "greet", func(p *wasmv1.WasmPlugin) { p.Spec.Schedules[0].Suspend = false })
	})

	t.Run("moves to the other host when its host is lost", func(t *testing.T) {
		p := waitPlugin(t, s, "greet", "a tick ran after resuming", func(p *wasmv1.WasmPlugin) bool {
			st := last(p)
			return st.LastResult != nil && st.LastSuccessfulTime != nil && st.LastSuccessfulTime.After(time.Now().Add(-3*time.Second))
		})
		lost := last(p).LastResult.Node
		other := "node-a"
		if lost == "node-a" {
			other = "node-b"
		}
		nodes[lost].proc.Kill() // no clean stop: its report and Lease still say it serves
		killed := time.Now()
		got := waitPlugin(t, s, "greet", "a run on "+other, func(p *wasmv1.WasmPlugin) bool {
			st := last(p)
			return st.LastSuccessfulTime != nil && st.LastSuccessfulTime.After(killed) && st.LastResult.Node == other
		})
		// Every tick after the loss ran, on the other host: the lost one was tried and the tick failed over.
		waitPlugin(t, s, "greet", "three more ticks", func(p *wasmv1.WasmPlugin) bool {
			return last(p).LastScheduleTime.Sub(last(got).LastScheduleTime.Time) >= 4*time.Second
		})
		final := waitPlugin(t, s, "greet", "status", func(*wasmv1.WasmPlugin) bool { return true })
		if st := last(final); st.LastResult.ReturnCode != 0 || !st.LastSuccessfulTime.Equal(st.LastScheduleTime) {
			t.Fatalf("a tick after the loss failed: %+v", st)
		}
	})

	t.Run("a Node schedule runs on each host", func(t *testing.T) {
		for name, n := range nodes {
			if ok, _ := n.proc.Exited(); ok {
				var err error
				if n.proc, err = s.StartHost(name, n.addr, "--lease-duration=4s"); err != nil {
					t.Fatal(err)
				}
			}
		}
		np := &wasmv1.WasmPlugin{ObjectMeta: metav1.ObjectMeta{Name: "greet-node", Namespace: "default"},
			Spec: wasmv1.WasmPluginSpec{
				Source:    wasmv1.Source{HTTP: &wasmv1.HTTPSource{URL: s.PluginsURL + "/greet.wasm"}},
				Schedules: []wasmv1.Schedule{{Name: "local", Schedule: "@every 1s", Function: "greet", Scope: wasmv1.ScheduleScopeNode}},
			}}
		if err := s.Client.Create(ctx, np); err != nil {
			t.Fatal(err)
		}
		runs := regexp.MustCompile(`wasm_operator_schedule_runs_total\{namespace="default",plugin="greet-node",schedule="local",scope="Node"\} (\d+)`)
		for name, n := range nodes {
			eventually(t, wait, func() (bool, string) {
				_, m := getMetrics(t, n.addr, scraper)
				sub := runs.FindStringSubmatch(m)
				if sub == nil {
					return false, name + " has run no Node schedule:\n" + grep(m, "schedule_runs")
				}
				v, _ := strconv.Atoi(sub[1])
				return v >= 2, fmt.Sprintf("%s ran it %d times", name, v)
			})
		}
		// Its status: no node fails it.
		got := waitPlugin(t, s, "greet-node", "the Node schedule in status", func(p *wasmv1.WasmPlugin) bool {
			return len(p.Status.Schedules) == 1
		})
		if st := got.Status.Schedules[0]; st.Name != "local" || st.FailingNodes != 0 || st.LastResult != nil {
			t.Errorf("greet-node's Node schedule status %+v, want local failing on no node", st)
		}
	})

	t.Run("a failing Node schedule is in the status, reported once per host", func(t *testing.T) {
		bad := &wasmv1.WasmPlugin{ObjectMeta: metav1.ObjectMeta{Name: "panics", Namespace: "default"},
			Spec: wasmv1.WasmPluginSpec{
				Source:    wasmv1.Source{HTTP: &wasmv1.HTTPSource{URL: s.PluginsURL + "/misbehave.wasm"}},
				Schedules: []wasmv1.Schedule{{Name: "boom", Schedule: "@every 1s", Function: "panic", Scope: wasmv1.ScheduleScopeNode}},
			}}
		if err := s.Client.Create(ctx, bad); err != nil {
			t.Fatal(err)
		}
		got := waitPlugin(t, s, "panics", "boom failing on both nodes", func(p *wasmv1.WasmPlugin) bool {
			return len(p.Status.Schedules) == 1 && p.Status.Schedules[0].FailingNodes == 2
		})
		if r := got.Status.Schedules[0].LastResult; r == nil || r.ReturnCode == 0 || r.Message == "" || (r.Node != "node-a" && r.Node != "node-b") {
			t.Errorf("boom's lastResult %+v, want a failure on one of the nodes", r)
		}
		// The plugin itself serves: a schedule failing is not the plugin failing.
		if !meta.IsStatusConditionTrue(got.Status.Conditions, wasmv1.ConditionReady) {
			t.Errorf("panics not Ready: %+v", got.Status.Conditions)
		}
		eventually(t, wait, func() (bool, string) {
			var events eventsv1.EventList
			if err := s.Client.List(ctx, &events, client.InNamespace("default")); err != nil {
				return false, err.Error()
			}
			for _, e := range events.Items {
				if e.Regarding.Name == "panics" && e.Reason == "ScheduleFailed" && strings.Contains(e.Note, "Node schedule boom fails on") {
					return true, ""
				}
			}
			return false, "no ScheduleFailed Event for panics"
		})
		// It fails at every run, but a host writes its report when a schedule starts failing, not at
		// each failed run: node-a's report stays the same over ten more runs (longer than the longest
		// interval between a host's report writes, host.MaxReportInterval).
		var before wasmv1.WasmHost
		if err := s.Client.Get(ctx, client.ObjectKey{Name: "node-a"}, &before); err != nil {
			t.Fatal(err)
		}
		boom := regexp.MustCompile(`wasm_operator_schedule_failures_total\{namespace="default",plugin="panics",schedule="boom",scope="Node"\} (\d+)`)
		count := func() int {
			_, m := getMetrics(t, nodes["node-a"].addr, scraper)
			if sub := boom.FindStringSubmatch(m); sub != nil {
				v, _ := strconv.Atoi(sub[1])
				return v
			}
			return 0
		}
		start := count()
		eventually(t, wait, func() (bool, string) {
			n := count()
			return n >= start+10, fmt.Sprintf("%d failed runs of boom on node-a since %d", n, start)
		})
		var after wasmv1.WasmHost
		if err := s.Client.Get(ctx, client.ObjectKey{Name: "node-a"}, &after); err != nil {
			t.Fatal(err)
		}
		if after.ResourceVersion != before.ResourceVersion {
			t.Errorf("node-a's WasmHost was rewritten while boom kept failing: %+v", after.Status.Plugins)
		}
	})
}
