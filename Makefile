# Set-up and checks. Every target installs what it needs into .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
PEERS := $(VENV)/.peers

.PHONY: install demo test test-slow bench readme-tables clean

$(INSTALLED): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[export,test]'
	touch $@

# The reference dense CRF (pydensecrf2, compiled from source) for the CRF agreement tests.
# If it cannot be built, the tests that need it skip and say so loudly.
$(PEERS): $(INSTALLED)
	$(PY) -m pip install --quiet --disable-pip-version-check 'pydensecrf2>=1.1' \
	  || echo "WARNING: pydensecrf2 could not be installed; CRF agreement tests will be skipped"
	touch $@

install: $(INSTALLED)

demo: $(INSTALLED)
	$(VENV)/bin/atrous demo --out demo_out

test: $(PEERS)
	$(PY) -m pytest -q

test-slow: $(PEERS)
	$(PY) -m pytest -q -m slow

bench: $(PEERS)
	$(PY) -m pip install --quiet --disable-pip-version-check 'segmentation-models-pytorch>=0.3'
	$(PY) bench/run_all.py

readme-tables: $(INSTALLED)
	$(PY) bench/readme_tables.py

clean:
	rm -rf $(VENV) demo_out build *.egg-info
