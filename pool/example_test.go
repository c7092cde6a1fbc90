package pool_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/wasm-operator/wasm-operator/pool"
)

// conn stands for something costly to create, such as a module instance.
type conn struct{ id int }

func Example() {
	ctx := context.Background()
	next := 0
	p, err := pool.New(ctx, pool.Options[*conn]{
		New: func(context.Context) (*conn, error) {
			next++
			return &conn{id: next}, nil
		},
		Close:          func(c *conn) { fmt.Println("close", c.id) },
		MaxConcurrency: 1,
		AcquireTimeout: 10 * time.Millisecond,
	})
	if err != nil {
		panic(err)
	}

	in, _ := p.Get(ctx)
	fmt.Println("got", in.Value().id)

	// The only slot is taken: a second Get gives up after the acquire timeout.
	if _, err := p.Get(ctx); errors.Is(err, pool.ErrSaturated) {
		fmt.Println("saturated")
	}

	p.Put(in)
	in, _ = p.Get(ctx) // the same instance, reused
	fmt.Println("got", in.Value().id)
	p.Put(in)

	_ = p.Drain(ctx) // closes the idle instance
	s := p.Stats()
	fmt.Printf("created %d, destroyed %d, hits %d, timeouts %d\n", s.Created, s.Destroyed, s.Hits, s.Timeouts)
	// Output:
	// got 1
	// saturated
	// got 1
	// close 1
	// created 1, destroyed 1, hits 1, timeouts 1
}
