#!/usr/bin/env bash
# Regenerates the committed Go and Python protobuf stubs. The generators are
# pinned: a different version would rewrite every stub, so we refuse it.
set -euo pipefail
cd "$(dirname "$0")/.."

PROTOC_WANT="libprotoc 3.21.12"           # Debian bookworm: protobuf-compiler
GEN_GO_VERSION="v1.36.12"                 # google.golang.org/protobuf/cmd/protoc-gen-go
GEN_GO_GRPC_VERSION="v1.5.1"              # google.golang.org/grpc/cmd/protoc-gen-go-grpc

have=$(protoc --version 2>/dev/null || true)
if [ "$have" != "$PROTOC_WANT" ]; then
  echo "gen-proto: need '$PROTOC_WANT', found '${have:-no protoc}' (apt-get install protobuf-compiler protobuf-compiler-grpc)" >&2
  exit 1
fi
command -v grpc_python_plugin >/dev/null || { echo "gen-proto: grpc_python_plugin missing (apt-get install protobuf-compiler-grpc)" >&2; exit 1; }

bin="$(pwd)/.tools/bin"
mkdir -p "$bin"
GOBIN="$bin" go install "google.golang.org/protobuf/cmd/protoc-gen-go@$GEN_GO_VERSION"
GOBIN="$bin" go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$GEN_GO_GRPC_VERSION"
export PATH="$bin:$PATH"

inc=(-I pyworker/proto -I actors/proto)
protoc "${inc[@]}" --go_out=. --go_opt=module=github.com/snakepit-go/snakepit \
  --go-grpc_out=. --go-grpc_opt=module=github.com/snakepit-go/snakepit \
  pyworker/proto/snakepit/v1/worker.proto
protoc "${inc[@]}" --go_out=. --go_opt=module=github.com/snakepit-go/snakepit \
  actors/proto/snakepit/actors/v1/pool.proto

# Python: the stubs live inside the snakepit package as snakepit/v1/.
protoc "${inc[@]}" --python_out=pyworker/python --grpc_python_out=pyworker/python \
  --plugin=protoc-gen-grpc_python="$(command -v grpc_python_plugin)" \
  pyworker/proto/snakepit/v1/worker.proto
touch pyworker/python/snakepit/v1/__init__.py
echo "gen-proto: ok"
