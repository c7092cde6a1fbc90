package scheduler_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"

	wasmv1 "github.com/wasm-operator/wasm-operator/api/v1alpha1"
	"github.com/wasm-operator/wasm-operator/internal/scheduler"
)

// The controller's Runner fires a Cluster schedule on a host through its call API and reports the run's
// status. A reconciler calls Set on every reconcile of the plugin.
func Example() {
	host := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Println(r.Method, r.URL.Path)
	}))
	defer host.Close()

	firer := &scheduler.ClusterFirer{
		Targets: func(context.Context, types.NamespacedName, int64) ([]scheduler.Target, error) {
			return []scheduler.Target{{Node: "node-a", URL: host.URL}}, nil
		},
		Client: host.Client(),
		Token:  func(context.Context) (string, error) { return "a token of the hosts' audience", nil },
	}
	done := make(chan wasmv1.ScheduleStatus, 1)
	runner, err := scheduler.New(scheduler.Options{
		Scope:          wasmv1.ScheduleScopeCluster,
		LeaderElection: true,
		Fire:           firer.Fire,
		Record:         func(_ types.NamespacedName, st wasmv1.ScheduleStatus) { done <- st },
		Registerer:     prometheus.NewRegistry(),
	})
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = runner.Start(ctx) }() // mgr.Add(runner) in the manager

	key := types.NamespacedName{Namespace: "shop", Name: "cache-warmer"}
	err = runner.Set(key, 1, false, []wasmv1.Schedule{{Name: "warm", Schedule: "@every 1s", Function: "warm"}}, nil)
	if err != nil {
		panic(err)
	}
	st := <-done
	fmt.Println(st.Name, "ran on", st.LastResult.Node, "returning", st.LastResult.ReturnCode)
	// Output:
	// POST /v1/namespaces/shop/wasmplugins/cache-warmer/call/warm
	// warm ran on node-a returning 0
}
