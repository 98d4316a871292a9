// Package pb holds the Go code protoc generates from
// pyworker/proto/snakepit/v1/worker.proto: the gRPC transport between the
// runtime and one Python worker (messages and the Worker service's client
// and server). Regenerate it with `make proto`; do not edit the generated
// files.
package pb
