# Snakepit for Go. `make demo` runs the demo, `make test` runs every test;
# both install what they need first (`make setup`).
SHELL := /bin/bash
GO    ?= go
PY     = $(shell scripts/find-python.sh grpc google.protobuf pytest)

.PHONY: all setup demo test test-go test-python bench proto vet clean

all: test

setup:
	@scripts/setup.sh

demo: setup
	$(GO) run ./cmd/demo

test: setup vet test-go test-python

vet:
	$(GO) vet ./...

test-go:
	$(GO) test -race -count=1 -timeout 10m ./...

test-python:
	cd pyworker/python && $(PY) -m pytest -q tests

bench: setup
	$(GO) run ./bench/callbench

proto:
	scripts/gen-proto.sh

clean:
	rm -rf .tools

# Free-threaded CPython 3.13 (--disable-gil) built from Debian's trixie source
# package into ${SNAKEPIT_CACHE:-~/.cache/snakepit}; see docs/free-threaded-python.md.
.PHONY: python-ft
python-ft:
	@scripts/build-python-ft.sh
