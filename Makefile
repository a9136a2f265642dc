# netring — `make help` lists the targets. CI runs `make test` (see .ci/run).

VENV      ?= .venv
PY        := $(VENV)/bin/python
PYDEPS    := "maturin>=1.5,<2" "pytest>=8" "pytest-timeout>=2.3" "hypothesis>=6" "ruff>=0.6" "uvloop>=0.19" "pyseccomp>=0.1.2" "redis>=5" "twisted>=23" "trustme>=1.1" "aiofastnet>=1.2" "uvicorn>=0.30" "httptools>=0.6" "h11>=0.14" "aiohttp>=3.9" "websockets>=12" "prometheus_client>=0.20"
HOST      ?= 127.0.0.1
PORT      ?= 5050
FUZZ_SECONDS ?= 30
SOAK_SECONDS ?= 60
SOAK_OUT  ?= benchmarks/results/soak

.PHONY: help build wheel wheel-check bench-scaling serve test test-rust test-python lint fmt bench bench-framed bench-workers bench-udp bench-proxy bench-kv bench-limits bench-tls bench-bulk bench-aio bench-proxy-v2 bench-reload soak bench-quick fuzz clean

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 14

$(VENV)/.deps: pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(PYDEPS)
	touch $@

build: $(VENV)/.deps  ## build netring (release) into the local virtualenv
	VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/maturin develop --release -q

wheel: $(VENV)/.deps  ## build the binary wheel (abi3: one for CPython >= 3.11; manylinux tag) and the sdist into dist/
	$(VENV)/bin/maturin build --release -o dist
	$(VENV)/bin/maturin sdist -o dist

wheel-check: wheel  ## install that wheel in a fresh virtualenv without Rust on PATH, and serve from it
	bash scripts/wheel_check.sh

serve: build  ## build, then run the echo server on $(HOST):$(PORT)
	$(PY) -m netring serve echo --host $(HOST) --port $(PORT)

test: build test-rust test-python  ## build and run every test: cargo, then pytest on each backend

test-rust:  ## the engine's tests (no Python)
	cargo test --workspace --release

test-python: build  ## the Python suite, once per backend (unavailable ones are skipped with the reason)
	$(PY) -m pytest -q

lint: $(VENV)/.deps  ## rustfmt, clippy, ruff
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	$(VENV)/bin/ruff check $(wildcard python tests benchmarks examples)

fmt: $(VENV)/.deps  ## format Rust and Python
	cargo fmt --all
	$(VENV)/bin/ruff check --fix $(wildcard python tests benchmarks examples)

bench: build  ## echo benchmark: netring vs uvloop vs asyncio vs a C epoll server
	$(PY) benchmarks/echo_bench.py

bench-framed: build  ## packet/line echo: netring vs uvloop/asyncio BufferedProtocol, Twisted, C
	$(PY) benchmarks/framed_bench.py

bench-scaling: build  ## worker processes (--processes 1,2) against the load generator: msgs/s and CPU/msg per N
	$(PY) benchmarks/workers_scaling.py --processes 1,2 --server-cpus 1 --loadgen-cpus 0 --repeat 5 --json benchmarks/results/scaling.json > benchmarks/results/scaling.md

bench-workers: build  ## worker pool: line-workers vs asyncio run_in_executor, and the hand-off cost
	$(PY) benchmarks/workers_bench.py --json benchmarks/results/workers.json > benchmarks/results/workers.md

bench-udp: build  ## UDP echo: netring vs uvloop/asyncio/C
	$(PY) benchmarks/udp_bench.py --wait-quiet 120 --retry-noisy 2 --json benchmarks/results/udp.json > benchmarks/results/udp.md

bench-proxy: build  ## serve proxy vs a direct connection to the C echo
	$(PY) benchmarks/proxy_bench.py --wait-quiet 120 --retry-noisy 2 --json benchmarks/results/proxy.json > benchmarks/results/proxy.md

bench-kv: build  ## kv (Redis protocol) vs redis-server under redis-benchmark, -P 1 and 16
	$(PY) benchmarks/kv_bench.py --wait-quiet 120 --retry-noisy 2 --json benchmarks/results/kv.json > benchmarks/results/kv.md

bench-tls: build  ## TLS echo: netring (engine TLS) vs aiofastnet, uvloop/asyncio ssl=, C OpenSSL; handshakes/s
	$(PY) benchmarks/tls_bench.py --wait-quiet 120 --retry-noisy 2 --json benchmarks/results/tls.json > benchmarks/results/tls.md

bench-bulk: build  ## large messages (16 KiB-1 MiB echo: MB/s, CPU/MB) and a 1 GiB file through sendfile
	$(PY) benchmarks/bulk_bench.py --repeat 3 --duration 4 --json benchmarks/results/bulk.json > benchmarks/results/bulk.md
	$(PY) benchmarks/sendfile_bench.py --repeat 5 --json benchmarks/results/sendfile.json > benchmarks/results/sendfile.md

bench-aio: build  ## inside asyncio: protocol/streams/websockets echo and uvicorn/aiohttp under wrk vs uvloop, aiofastnet, granian
	$(PY) benchmarks/aio_bench.py --repeat 3 --duration 4 --json benchmarks/results/aio.json > benchmarks/results/aio.md

bench-proxy-v2: build  ## PROXY protocol v2 overhead: the echo with and without the PROXY layer, paired per repetition
	$(PY) benchmarks/proxy_v2_bench.py --repeat 7 --json benchmarks/results/proxy_v2.json > benchmarks/results/proxy_v2.md

bench-reload: build  ## reload under load: SIGHUP / a killed worker while 50 clients keep reconnecting; failed connects, lost replies
	$(PY) benchmarks/reload_bench.py --json benchmarks/results/reload.json > benchmarks/results/reload.md

bench-limits: build  ## RSS per idle connection, EMFILE recovery, connections/s vs uvloop
	$(PY) benchmarks/limits_bench.py

soak: build  ## hostile mixed traffic for $(SOAK_SECONDS)s; fails on RSS growth >=5 % or leaked fds/threads
	$(PY) benchmarks/soak.py --duration $(SOAK_SECONDS) --out $(SOAK_OUT)

bench-quick: build  ## a short smoke run of the benchmark
	$(PY) benchmarks/echo_bench.py --quick

fuzz:  ## fuzz each framer against the reference framer, $(FUZZ_SECONDS)s per target (stable Rust)
	fuzz/run.sh $(FUZZ_SECONDS)

clean:  ## remove build products and the virtualenv
	cargo clean
	rm -rf $(VENV) benchmarks/out fuzz/target fuzz/artifacts
