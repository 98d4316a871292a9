package telemetry_test

import (
	"os"
	"time"

	"github.com/snakepit-go/snakepit/telemetry"
)

// A pool's raw facts go through Complete, which derives the totals, rates
// saturation and runs the rules; RenderTable shows the report.
func ExampleRenderTable() {
	p := telemetry.Complete(telemetry.PoolReport{Name: "default", Profile: "process", Python: "3.11.2", GILEnabled: true,
		Size: 1, Ready: 1, Queued: 6, QueueSize: 1000, NoFreeCapacity: 40, Workers: []telemetry.WorkerReport{
			{ID: "default-0", Pid: 4242, Ready: true, Capacity: 1, Load: 1, Uptime: time.Minute, Requests: 120},
		}}, telemetry.Thresholds{}, nil)
	r := telemetry.Report{Time: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC), Pools: []telemetry.PoolReport{p}}
	_ = telemetry.RenderTable(os.Stdout, r, telemetry.TableOptions{Recommendations: true})
	// Output:
	// snakepit inspect at 2025-06-01T12:00:00Z
	//
	// POOL     PROFILE  PYTHON  GIL  WORKERS  UTIL  LOAD  QUEUE   WAITED  REFUSED  RESTARTS  RECYCLES  SATURATION
	// default  process  3.11.2  on   1/1      100%  1/1   6/1000  40      0        0         0         warn
	//
	// pool default
	//   saturation warn: utilisation 100% (1/1) ≥ 80%; 6 calls queued
	//   [warn] queue-often-full: 40 calls waited for a free worker against 120 served (33%) (queue now 6/1000): raise PoolConfig.Size from 1 to about 7, or make calls shorter; a larger QueueSize only makes calls wait longer
}
