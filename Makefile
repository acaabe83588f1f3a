# ubroker: two commands on a fresh machine.
#   make run    set up .venv and start the broker (MicroPython unix port) on 127.0.0.1:1883
#   make test   set up .venv, lint (ruff) and run the whole test suite
#   make bench  set up the peers (mosquitto, aedes, amqtt) and run the side-by-side benchmark

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-deps bench bench-setup setup clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q -e .
	touch $@

run: $(STAMP)
	$(BIN)/ubroker run --data data

test: $(STAMP) test-deps heap32-deps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q tests

# The bridge tests start Debian's mosquitto as the upstream broker.
test-deps:
	@command -v mosquitto >/dev/null || test -x /usr/sbin/mosquitto || \
	  { $(MAKE) -s $(APT_UPDATED) && $(APT) install mosquitto; }

# tests/memory/test_heap32.py measures the broker in a 32-bit MicroPython: the webassembly port from
# npm, pinned by tools/heap32/package-lock.json, installed only if missing or stale.
.PHONY: heap32-deps
heap32-deps:
	@{ command -v node >/dev/null && command -v npm >/dev/null; } || \
	  { $(MAKE) -s $(APT_UPDATED) && $(APT) install nodejs npm; }
	@test tools/heap32/node_modules/.package-lock.json -nt tools/heap32/package-lock.json || \
	  (cd tools/heap32 && npm ci --no-audit --no-fund --loglevel=error)

bench: $(STAMP) bench-setup
	$(BIN)/ubroker bench

# The peers and tools of the benchmark, each installed only if missing; a peer that cannot be
# installed is reported as unavailable by `ubroker bench` rather than stopping the run.
#   cc (bench/loadgen.c, built by `ubroker bench` into bench/bin/), mosquitto (Debian),
#   aedes (npm, pinned by bench/package-lock.json), amqtt (PyPI, pinned, in its own .venv-bench).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT  := DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get -y -q
APT_UPDATED := bench/bin/.apt-updated

$(APT_UPDATED):
	mkdir -p bench/bin
	$(APT) update && touch $@

bench-setup:
	@command -v cc >/dev/null || command -v gcc >/dev/null || \
	  { $(MAKE) -s $(APT_UPDATED) && $(APT) install gcc libc6-dev; }
	@command -v mosquitto >/dev/null || test -x /usr/sbin/mosquitto || \
	  { $(MAKE) -s $(APT_UPDATED) && $(APT) install mosquitto; } || \
	  echo "bench-setup: could not install mosquitto; it will be reported unavailable"
	@{ command -v node >/dev/null && command -v npm >/dev/null; } || \
	  { $(MAKE) -s $(APT_UPDATED) && $(APT) install nodejs npm; } || \
	  echo "bench-setup: could not install node/npm; aedes will be reported unavailable"
	@test bench/node_modules/.package-lock.json -nt bench/package-lock.json || \
	  (cd bench && npm ci --no-audit --no-fund --loglevel=error) || \
	  echo "bench-setup: could not install aedes; it will be reported unavailable"
	@test .venv-bench/.installed -nt bench/requirements-amqtt.txt || \
	  { $(PYTHON) -m venv .venv-bench && .venv-bench/bin/python -m pip install -q -r bench/requirements-amqtt.txt && \
	    touch .venv-bench/.installed; } || \
	  { rm -rf .venv-bench; echo "bench-setup: could not install amqtt; it will be reported unavailable"; }

clean:
	rm -rf $(VENV) build data
