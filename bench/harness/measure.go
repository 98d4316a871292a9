package harness

import (
	"context"
	"math"
	"slices"
	"sort"
	"sync"
	"time"
)

// Run is one measured stream of calls.
type Run struct {
	// Latencies of every call, sorted ascending.
	Latencies []time.Duration
	// Elapsed is from the first call's start to the last call's end.
	Elapsed time.Duration
}

// Measure runs concurrency goroutines that each issue calls back to back
// until d has passed since the start (calls already issued then finish and
// count), timing every call. It stops at the first failed call and returns
// its error.
func Measure(ctx context.Context, call Call, concurrency int, d time.Duration) (Run, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	lat := make([][]time.Duration, concurrency)
	errs := make([]error, concurrency)
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(d)
	for g := 0; g < concurrency; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := make([]time.Duration, 0, 1024)
			for ctx.Err() == nil {
				t0 := time.Now()
				if !t0.Before(end) {
					break
				}
				if err := call(ctx, g); err != nil {
					errs[g] = err
					cancel()
					break
				}
				mine = append(mine, time.Since(t0))
			}
			lat[g] = mine
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	for _, err := range errs {
		if err != nil {
			return Run{}, err
		}
	}
	r := Run{Latencies: slices.Concat(lat...), Elapsed: elapsed}
	slices.Sort(r.Latencies)
	return r, nil
}

// Calls is the number of calls completed.
func (r Run) Calls() int { return len(r.Latencies) }

// Rate is calls completed per second of Elapsed.
func (r Run) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(len(r.Latencies)) / r.Elapsed.Seconds()
}

// Quantile is the nearest-rank q-quantile (0 < q ≤ 1) of the latencies: the
// smallest sample that at least q of all samples do not exceed. No
// interpolation.
func (r Run) Quantile(q float64) time.Duration {
	return Quantile(r.Latencies, q)
}

// Quantile is the nearest-rank q-quantile of sorted.
func Quantile(sorted []time.Duration, q float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(n))) - 1
	return sorted[min(max(i, 0), n-1)]
}

// Median is the median of xs (the mean of the middle two for an even count).
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
