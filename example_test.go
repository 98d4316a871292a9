package snakepit_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/snakepit-go/snakepit"
)

func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rt, err := snakepit.Start(ctx, snakepit.Config{
		Pools:  []snakepit.PoolConfig{{Name: "default", Adapter: "examples.textstats", Size: 2}},
		Logger: hclog.NewNullLogger(),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer rt.Stop(ctx)

	res, err := rt.Call(ctx, "default", "word_count", map[string]any{"text": "a b c"})
	if err != nil {
		fmt.Println(err)
		return
	}
	var n int
	if err := res.Decode(&n); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("words:", n)

	_, err = rt.Call(ctx, "default", "fail", map[string]any{"message": "boom"})
	var pe *snakepit.PythonError
	if errors.As(err, &pe) {
		fmt.Println("python raised:", pe.Type, pe.Message)
	}
	// Output:
	// words: 3
	// python raised: builtins.ValueError boom
}
