# Snakepit for Go. `make demo` runs the demo, `make test` runs every test;
# both install what they need first (`make setup`).
SHELL := /bin/bash
GO    ?= go
PY     = $(shell scripts/find-python.sh grpc google.protobuf pytest)

.PHONY: all setup demo test test-go test-python lint vet bench proto clean

all: test

setup:
	@scripts/setup.sh

demo: setup
	$(GO) run ./cmd/demo

test: setup lint test-go test-python

# Linters, all in make test (and so in CI): go vet, staticcheck (pinned by
# scripts/setup.sh; checks in staticcheck.conf) and mypy, strict, on the
# Python package, which ships py.typed (settings in its pyproject.toml).
lint: vet
	.tools/bin/staticcheck ./...
	cd pyworker/python && $$(../../scripts/find-python.sh mypy) -m mypy

vet:
	$(GO) vet ./...

# The Go suite runs every worker and pool test on the native and gRPC
# transports, and on a free-threaded CPython 3.13t (built once, then cached).
test-go:
	ft=$$(scripts/build-python-ft.sh | tail -n 1) && \
	SNAKEPIT_TEST_PYTHON_FT=$$ft $(GO) test -race -count=1 -timeout 15m ./...

test-python:
	ft=$$(scripts/build-python-ft.sh | tail -n 1) && \
	cd pyworker/python && SNAKEPIT_TEST_PYTHONS="$(PY):$$ft" $(PY) -m pytest -q tests

bench: setup
	$(GO) run ./bench/callbench
	$(GO) run ./bench/recyclebench
	$(GO) run ./bench/streambench

proto:
	scripts/gen-proto.sh

clean:
	rm -rf .tools

# Free-threaded CPython 3.13 (--disable-gil) built from Debian's trixie source
# package into ${SNAKEPIT_CACHE:-~/.cache/snakepit}; see docs/free-threaded-python.md.
.PHONY: python-ft
python-ft:
	@scripts/build-python-ft.sh

# Fuzzing: every Fuzz target in the repository (found by grep, so new ones
# join in), one at a time for $(FUZZTIME) each. A failing input is written
# to testdata/fuzz/<FuzzName>/ next to the target; commit it once fixed, and
# it runs as a seed with every `go test`.
FUZZTIME ?= 30s
.PHONY: fuzz
fuzz:
	@set -e; for file in $$(grep -rlE --include='*_test.go' --exclude-dir=.tools --exclude-dir=.git '^func Fuzz[A-Za-z0-9_]*\(' . | sort); do \
		pkg=$$(dirname $$file); \
		for fn in $$(sed -nE 's/^func (Fuzz[A-Za-z0-9_]*)\(.*/\1/p' $$file); do \
			echo "$(GO) test -run '^\$$' -fuzz '^$$fn\$$' -fuzztime $(FUZZTIME) $$pkg"; \
			$(GO) test -run '^$$' -fuzz "^$$fn\$$" -fuzztime $(FUZZTIME) $$pkg; \
		done; \
	done

# Long reliability runs: 1,000 worker restarts checked for leaks (in a test
# process of its own, so no earlier test's stragglers blur its counts), then
# the crash storm and the host-SIGKILL test; not part of make test.
.PHONY: soak
soak: setup
	SNAKEPIT_SOAK=1 $(GO) test -race -count=1 -timeout 30m -run 'RestartsLeakNothing' -v .
	ft=$$(scripts/build-python-ft.sh | tail -n 1) && \
	SNAKEPIT_TEST_PYTHON_FT=$$ft $(GO) test -race -count=1 -timeout 30m -run 'CrashStorm|HostSIGKILL' -v .
