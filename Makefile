# Set-up on a fresh machine: `make demo` and `make test` install on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
EXTRAS := plot,moo,torch,test,postgres

.PHONY: install test test-fast demo pipeline bench clean

$(STAMP): setup.cfg constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[$(EXTRAS)]' --config-settings editable_mode=compat
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --timeout 300

demo: $(STAMP)
	mkdir -p out/demo
	$(PY) -m search.pareto --export out/demo/front.json --plot out/demo/front.png

# The Fashion-MNIST demo from scratch (train, dump, search, validate) into out/pipeline/; compares the
# cache fingerprint with the bundled one. Passive OpenMP waiting keeps 2 threads fast on a shared machine.
pipeline: $(STAMP)
	OMP_WAIT_POLICY=PASSIVE $(PY) -m exits.pipeline --out out/pipeline

clean:
	rm -rf out .pytest_cache
