#!/usr/bin/env bash
# Installs what `make demo` and `make test` need, when it is missing:
# Go modules, staticcheck (pinned), and a Python 3.11+ with grpcio,
# protobuf, pytest and mypy.
# As root on Debian it uses apt-get; elsewhere it prints what to run.
set -euo pipefail
cd "$(dirname "$0")/.."

need_go="1.26"
if ! command -v go >/dev/null; then
  echo "setup: Go $need_go or newer is needed: https://go.dev/dl/" >&2
  exit 1
fi

py_modules=(grpc google.protobuf pytest mypy)
debian_packages=(python3-grpcio python3-protobuf python3-pytest mypy)
# The Go linter `make lint` runs, pinned: another version finds other things.
staticcheck_version="v0.8.2" # honnef.co/go/tools

if ! scripts/find-python.sh "${py_modules[@]}" >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing ${debian_packages[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${debian_packages[@]}" >/dev/null
  else
    echo "setup: no Python 3.11+ here can import grpc, google.protobuf and pytest." >&2
    echo "  Debian/Ubuntu: sudo apt-get install ${debian_packages[*]}" >&2
    echo "  elsewhere:     python3 -m pip install grpcio protobuf pytest mypy   (or: pip install ./pyworker/python pytest mypy)" >&2
    echo "  then, if that Python is not python3 on PATH: export SNAKEPIT_PYTHON=/path/to/python" >&2
    exit 1
  fi
fi
py=$(scripts/find-python.sh "${py_modules[@]}") || {
  echo "setup: still no Python that can import ${py_modules[*]}" >&2; exit 1; }
go mod download
staticcheck=.tools/bin/staticcheck
if ! "$staticcheck" -version 2>/dev/null | grep -q "(${staticcheck_version#v})"; then
  echo "setup: installing staticcheck $staticcheck_version into .tools/bin"
  GOBIN="$(pwd)/.tools/bin" go install "honnef.co/go/tools/cmd/staticcheck@$staticcheck_version"
fi
echo "setup: ok (Go: $(go env GOVERSION), Python: $py $("$py" -c 'import platform; print(platform.python_version())'))"
