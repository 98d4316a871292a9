package snakepit

import (
	"context"
	"fmt"
	"syscall"

	apb "github.com/snakepit-go/snakepit/actors/pb"
	"github.com/snakepit-go/snakepit/pyworker"
	wpb "github.com/snakepit-go/snakepit/pyworker/pb"
)

// decodeReply turns a pool's reply into a Result or a typed error. session
// is the call's session ("" for none).
func decodeReply(pool, tool, session string, r *apb.CallReply) (*Result, error) {
	if f := r.GetFailure(); f != nil {
		return nil, failureError(pool, tool, r.GetWorkerId(), session, f)
	}
	rep := r.GetReply()
	if e := rep.GetError(); e != nil {
		return nil, pythonFailure(pool, tool, r.GetWorkerId(), e)
	}
	if raw, ok := rep.GetOutcome().(*wpb.ExecuteReply_ResultRaw); ok {
		return &Result{raw: raw.ResultRaw, isRaw: true, worker: r.GetWorkerId(), reboundFrom: r.GetReboundFrom()}, nil
	}
	return &Result{json: rep.GetResultJson(), worker: r.GetWorkerId(), reboundFrom: r.GetReboundFrom()}, nil
}

func failureError(pool, tool, worker, session string, f *apb.Failure) error {
	switch f.GetCode() {
	case apb.Failure_CODE_SESSION_LOST:
		return callError(pool, tool, ErrSessionLost, f.GetMessage())
	case apb.Failure_CODE_SESSION_BUSY:
		return callError(pool, tool, ErrSessionBusy, f.GetMessage())
	case apb.Failure_CODE_DEADLOCK:
		return callError(pool, tool, ErrDeadlock, f.GetMessage())
	case apb.Failure_CODE_SATURATED:
		return callError(pool, tool, ErrPoolSaturated, f.GetMessage()+": retry later, add workers (PoolConfig.Size) or raise PoolConfig.QueueSize")
	case apb.Failure_CODE_WORKER_CRASHED:
		return &WorkerCrashedError{Pool: pool, Tool: tool, Worker: worker, Session: session, Stderr: f.GetStderrTail(), KilledBy: f.GetKilledBy(),
			Stacks: f.GetStacks(), Exit: ExitStatus{Code: int(f.GetExitCode()), Signal: syscall.Signal(f.GetSignal()),
				OOM: pyworker.OOMVerdict{Known: f.GetOomKnown(), Killed: f.GetOomKilled(), Detail: f.GetOomDetail()}}}
	case apb.Failure_CODE_DEADLINE:
		return fmt.Errorf("snakepit: %s.%s: %s: %w", pool, tool, f.GetMessage(), context.DeadlineExceeded)
	case apb.Failure_CODE_CANCELLED:
		return fmt.Errorf("snakepit: %s.%s: %s: %w", pool, tool, f.GetMessage(), context.Canceled)
	case apb.Failure_CODE_TOO_LARGE:
		return callError(pool, tool, ErrMessageTooLarge, f.GetMessage()+" (Config.MaxMessageBytes)")
	case apb.Failure_CODE_POOL_UNAVAILABLE:
		return callError(pool, tool, ErrPoolUnavailable, f.GetMessage())
	default:
		return callError(pool, tool, ErrTransport, f.GetMessage())
	}
}

func pythonFailure(pool, tool, worker string, e *wpb.ErrorInfo) error {
	switch e.GetKind() {
	case wpb.ErrorInfo_KIND_UNKNOWN_TOOL:
		return callError(pool, tool, ErrUnknownTool, e.GetMessage())
	case wpb.ErrorInfo_KIND_BAD_ARGUMENTS:
		return callError(pool, tool, ErrBadArguments, e.GetMessage())
	case wpb.ErrorInfo_KIND_UNENCODABLE_RESULT:
		return callError(pool, tool, ErrUnencodableResult, e.GetMessage())
	case wpb.ErrorInfo_KIND_DEADLINE_EXCEEDED:
		return fmt.Errorf("snakepit: %s.%s: %s: %w", pool, tool, e.GetMessage(), context.DeadlineExceeded)
	case wpb.ErrorInfo_KIND_TOO_LARGE:
		return callError(pool, tool, ErrMessageTooLarge, e.GetMessage()+" (Config.MaxMessageBytes)")
	case wpb.ErrorInfo_KIND_CANCELLED:
		return fmt.Errorf("snakepit: %s.%s: %s: %w", pool, tool, e.GetMessage(), context.Canceled)
	case wpb.ErrorInfo_KIND_SHUTTING_DOWN:
		return callError(pool, tool, ErrPoolUnavailable, "worker "+worker+" is shutting down")
	}
	return &PythonError{Pool: pool, Tool: tool, Worker: worker, Type: e.GetType(), Message: e.GetMessage(), Traceback: e.GetTraceback()}
}
