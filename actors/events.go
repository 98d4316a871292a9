package actors

import (
	"time"

	apb "github.com/snakepit-go/snakepit/actors/pb"
	wpb "github.com/snakepit-go/snakepit/pyworker/pb"
	"github.com/snakepit-go/snakepit/telemetry"
)

// publish hands e to the runtime's event bus, if there is one.
func publish(bus *telemetry.Bus, e telemetry.Event) {
	if bus != nil {
		bus.Publish(e)
	}
}

// listening reports whether building an event is worth it.
func listening(bus *telemetry.Bus) bool { return bus != nil && bus.Listening() }

// outcomes names how a call ended, for telemetry.RequestExecuted.
var (
	failureOutcomes = map[apb.Failure_Code]string{
		apb.Failure_CODE_DEADLINE: "deadline", apb.Failure_CODE_CANCELLED: "cancelled",
		apb.Failure_CODE_WORKER_CRASHED: "worker_crashed", apb.Failure_CODE_TOO_LARGE: "too_large",
		apb.Failure_CODE_TRANSPORT: "transport",
	}
	errorOutcomes = map[wpb.ErrorInfo_Kind]string{
		wpb.ErrorInfo_KIND_UNKNOWN_TOOL: "unknown_tool", wpb.ErrorInfo_KIND_BAD_ARGUMENTS: "bad_arguments",
		wpb.ErrorInfo_KIND_UNENCODABLE_RESULT: "unencodable_result", wpb.ErrorInfo_KIND_DEADLINE_EXCEEDED: "deadline",
		wpb.ErrorInfo_KIND_TOO_LARGE: "too_large", wpb.ErrorInfo_KIND_CANCELLED: "cancelled",
		wpb.ErrorInfo_KIND_SHUTTING_DOWN: "shutting_down",
	}
)

// outcome classifies a worker's reply to a call.
func outcome(r *apb.CallReply) string {
	if f := r.GetFailure(); f != nil {
		if o, ok := failureOutcomes[f.GetCode()]; ok {
			return o
		}
		return "transport"
	}
	if e := r.GetReply().GetError(); e != nil {
		if o, ok := errorOutcomes[e.GetKind()]; ok {
			return o
		}
		return "python_error"
	}
	return "ok"
}

// requestExecuted publishes how one call went on this runner's worker.
func (r *runner) requestExecuted(tool string, began time.Time, reply *apb.CallReply) {
	if !listening(r.events) {
		return
	}
	now := time.Now()
	r.events.Publish(telemetry.RequestExecuted{Time: now, Pool: r.pool, Worker: r.id, Tool: tool,
		Duration: now.Sub(began), Outcome: outcome(reply)})
}
