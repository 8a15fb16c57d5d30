# The verbs everyone uses. `make demo` and `make test` work on a fresh machine: they create
# .venv, install what is needed and build the package in release mode first.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
BIN    := $(VENV)/bin/uringapi
LOOM_TARGET := target/loom

# Everything that changes the built package.
SOURCES := $(shell find protocol/src server/src server/cli/src worker/src worker/python -type f \( -name '*.rs' -o -name '*.py' -o -name '*.pyi' \) 2>/dev/null) \
           Cargo.toml Cargo.lock protocol/Cargo.toml server/Cargo.toml server/cli/Cargo.toml worker/Cargo.toml \
           worker/build.rs pyproject.toml

.PHONY: conformance-h2 readme-options setup demo test test-rust loom e2e tls-tools lint bench bench-micro clean conformance \
	conformance-deps

setup: $(VENV)/.built

$(VENV)/.deps: tests/requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "maturin>=1.7,<2" -r tests/requirements.txt
	touch $@

$(VENV)/.built: $(VENV)/.deps $(SOURCES)
	$(VENV)/bin/maturin develop --release --quiet
	test -x $(BIN)
	touch $@

demo: setup
	@echo "uringapi demo: a FastAPI app on http://127.0.0.1:8000 (2 workers), metrics on :9100. Try:"
	@echo "  curl -s localhost:8000/block &  curl -s -w ' %{time_total}s' localhost:8000/fast   # /fast stays fast while /block blocks a worker"
	@echo "  curl -s localhost:8000/"
	@echo "  curl -s localhost:9100/metrics | grep -E 'stall|requests_total'"
	@echo "  .venv/bin/python -m websockets ws://localhost:8000/ws   # WebSocket echo"
	$(BIN) serve uringapi.demo_fastapi:app --workers 2 --metrics-port 9100

# The conformance venvs (pip installs, mostly waiting on the network) are made while the
# suites run, which leave part of the CPU idle. The suites start first: tls-tools already
# ran (test-rust), and as e2e's prerequisite it was a job that let the venv steps take both
# slots first (the suites waited 20 to 26 s for one).
test: setup lint test-rust loom
	$(MAKE) -j2 e2e conformance-deps E2E_PREREQS=setup
	$(MAKE) conformance

test-rust: tls-tools
	cargo test --workspace --exclude uringapi-worker --all-targets
	cargo test -p uringapi-worker --lib
	cargo test --workspace --exclude uringapi-worker --benches --no-run

# Loom models of the ring protocol. The run fails if no model ran. Built optimised (loom
# explores thousands of interleavings) in a target of its own, but at opt-level 1 with no
# LTO, parallel codegen and no debug info: the models run as fast as under the shipped
# profile (2.0 s against 2.4 s) and the build takes 49 CPU-s instead of 67 (shared machine).
LOOM_PROFILE := CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_LTO=false \
	CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 CARGO_PROFILE_RELEASE_DEBUG=false

loom:
	mkdir -p target
	RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=$(LOOM_TARGET) LOOM_MAX_PREEMPTIONS=3 $(LOOM_PROFILE) \
		cargo test -p uringapi-protocol --release --test loom_ring 2>&1 | tee $(LOOM_TARGET).log
	@grep -Eq 'test result: ok\. [1-9][0-9]* passed' $(LOOM_TARGET).log || { echo "error: no loom model ran"; exit 1; }

# The suites run E2E_JOBS at a time (pytest-xdist; each test starts its own servers on free
# ports): much of their time is spent waiting on timeouts, so two at a time on two cores
# take 4.3 to 5.5 minutes instead of 8.5. The quick bench run measures CPU per request: it runs
# alone, after them.
E2E_JOBS ?= 2
QUICK_BENCH := tests/bench/test_bench_quick.py

E2E_PREREQS ?= setup tls-tools
e2e: $(E2E_PREREQS)
	$(VENV)/bin/pytest tests -q -n $(E2E_JOBS) --dist worksteal --timeout 300 --durations=30 --ignore=$(QUICK_BENCH)
	$(VENV)/bin/pytest $(QUICK_BENCH) -q --timeout 300 --durations=5

# tests/e2e/test_tls.py makes its certificates with the openssl CLI; the kTLS layout test
# (server/src/tls/crypto_info_tests.rs) compiles against <linux/tls.h>.
tls-tools:
	command -v openssl >/dev/null || (apt-get update -q && apt-get install -y -q openssl)
	test -f /usr/include/linux/tls.h || (apt-get update -q && apt-get install -y -q linux-libc-dev)

# Part of make test: a format difference, a clippy warning, a ruff finding, an import cycle
# or a file over its line limit fails the run.
lint: $(VENV)/.deps
	cargo fmt --all -- --check
	rustfmt --edition 2021 --check benches/e2e/loadgen/*.rs
	cargo clippy --workspace --all-targets -- -D warnings
	$(VENV)/bin/ruff check worker/python tests benches tuning
	$(PY) tests/module_graph.py protocol/src server/src server/cli/src worker/src
	$(PY) tests/file_sizes.py

# Regenerates the README's table of every option and its variable (from the clap definitions).
readme-options:
	UPDATE_README=1 cargo test -p uringapi-cli --bin uringapi cli::tests::the_readme_lists_every_option_with_its_variable

# Side-by-side run against uvicorn and granian (QUICK=1: one short round, README untouched).
# BENCH_ARGS passes options through, e.g. BENCH_ARGS="--apps hello --rounds 5".
bench: setup
	$(PY) benches/e2e/run.py $(if $(QUICK),--quick) $(BENCH_ARGS)

# Criterion micro-benchmarks: ring push/pop and round trip, HTTP head parse, ASGI scope build
# (plus worker_cpu, the worker's CPU per request through a real channel).
bench-micro:
	cargo bench -p uringapi-benches

# Outside checkers (tests/conformance/README.md): asgion inside the worker, daphne's own HTTP
# and websocket tests, Autobahn's 517 WebSocket cases (kosoku), smoke runs on Python
# 3.10, 3.12 and 3.13, and our own HTTP/2 suite (check_h2.py: RFC 9113 and RFC 7541 case by
# case over h2c and TLS, standing in for h2spec, which cannot be built here). One wheel, built once, goes into a
# venv per Python under target/conformance (kept between runs; rebuilt when its
# requirements change, reinstalled when the wheel does).
CONF           := target/conformance
CONF_VENVS     := $(CONF)/venv310 $(CONF)/venv312 $(CONF)/venv313
DAPHNE_VERSION := 4.2.3
DAPHNE_DIR     := $(CONF)/daphne-$(DAPHNE_VERSION)

conformance: tls-tools conformance-deps
	DAPHNE_DIR=$(CURDIR)/$(DAPHNE_DIR) tests/conformance/run.sh

conformance-deps: $(addsuffix /.wheel,$(CONF_VENVS)) $(DAPHNE_DIR)/.unpacked

$(CONF)/wheel/.built: $(VENV)/.deps $(SOURCES)
	rm -rf $(CONF)/wheel
	$(VENV)/bin/maturin build --release --quiet --out $(CONF)/wheel
	touch $@

$(CONF)/venv312/.deps: tests/conformance/requirements-asgion.txt tests/conformance/requirements-websocket.txt \
	tests/conformance/requirements-h2.txt
$(CONF)/venv310/.deps $(CONF)/venv313/.deps: tests/conformance/requirements-smoke.txt
$(CONF)/venv%/.deps:
	py="$$(tests/conformance/find-python.sh $*)" && rm -rf $(@D) && "$$py" -m venv $(@D)
	$(@D)/bin/pip install -q --upgrade pip
	$(@D)/bin/pip install -q $(addprefix -r ,$^)
	touch $@

$(CONF)/venv%/.wheel: $(CONF)/venv%/.deps $(CONF)/wheel/.built
	$(@D)/bin/pip install -q --no-deps --force-reinstall $(CONF)/wheel/*.whl
	touch $@

$(DAPHNE_DIR)/.unpacked:
	rm -rf $(CONF)/download $(DAPHNE_DIR) && mkdir -p $(CONF)/download
	$(PIP) download -q --no-binary :all: --no-deps -d $(CONF)/download daphne==$(DAPHNE_VERSION)
	tar -xzf $(CONF)/download/daphne-$(DAPHNE_VERSION).tar.gz -C $(CONF)
	touch $@

# h2spec (HTTP/2 conformance) over h2c and TLS: built from its Go module with Debian's golang
# into target/h2spec, installing golang first when it is missing (as tls-tools does openssl).
# Not part of `make conformance`: `go install` needs the Go module proxy, which this
# machine and CI cannot reach (lookup proxy.golang.org: no such host), so h2spec cannot be
# built here. `make conformance` runs tests/conformance/check_h2.py in its place (the same
# RFC 9113/7541 sections, our own cases and stricter error codes; README, "HTTP/2"). Run
# this target where the proxy is reachable.
H2SPEC := target/h2spec/bin/h2spec

conformance-h2: setup tls-tools $(H2SPEC)
	H2SPEC=$(CURDIR)/$(H2SPEC) tests/conformance/h2spec.sh

$(H2SPEC):
	command -v go >/dev/null || (apt-get update -q && apt-get install -y -q golang-go)
	mkdir -p $(@D)
	GOPATH=$(CURDIR)/target/h2spec/go GOBIN=$(CURDIR)/$(@D) GOFLAGS=-modcacherw \
		go install github.com/summerwind/h2spec/cmd/h2spec@latest

clean:
	rm -rf $(VENV) target
