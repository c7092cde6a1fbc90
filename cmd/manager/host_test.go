package main

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestDrain: after the signal the host keeps running for the drain delay with readiness failing, then
// stops; without a delay it stops at once.
func TestDrain(t *testing.T) {
	d := &drainer{delay: 300 * time.Millisecond}
	ready := d.ready(func() error { return nil })
	signal, stop := context.WithCancel(context.Background())
	drained := make(chan struct{})
	ctx, cancel := d.after(signal, func() { close(drained) })
	defer cancel()
	if err := ready(); err != nil {
		t.Fatalf("ready before the signal: %v", err)
	}
	start := time.Now()
	stop()
	<-drained
	if err := ready(); err == nil || err.Error() != "shutting down" {
		t.Errorf("ready while draining = %v, want shutting down", err)
	}
	if ctx.Err() != nil {
		t.Error("stopped at the signal; want it to run on for the drain delay")
	}
	<-ctx.Done()
	if took := time.Since(start); took < d.delay {
		t.Errorf("stopped %v after the signal, before the drain delay %v", took, d.delay)
	}

	notYet := errors.New("not registered")
	if err := (&drainer{}).ready(func() error { return notYet })(); err != notYet {
		t.Errorf("ready passes the host's own check through: got %v", err)
	}
	signal, stop = context.WithCancel(context.Background())
	ctx, cancel = (&drainer{}).after(signal, func() { t.Error("no drain without a delay") })
	defer cancel()
	stop()
	<-ctx.Done()
}
