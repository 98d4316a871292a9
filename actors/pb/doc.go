// Package pb holds the Go code protoc generates from
// actors/proto/snakepit/actors/v1/pool.proto: the calls sent to a pool actor
// and their replies. Regenerate it with `make proto`; do not edit the
// generated file.
package pb
