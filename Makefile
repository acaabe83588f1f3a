# ubroker: two commands on a fresh machine.
#   make run    set up .venv and start the broker (MicroPython unix port) on 127.0.0.1:1883
#   make test   set up .venv and run the whole test suite
#   make bench  set up the peers (mosquitto, aedes, amqtt) and run the side-by-side benchmark

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test bench setup clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q -e .
	touch $@

run: $(STAMP)
	$(BIN)/ubroker run --data data

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

bench: $(STAMP)
	$(BIN)/ubroker bench

clean:
	rm -rf $(VENV) build data
