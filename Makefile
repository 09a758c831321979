# Set-up and checks. Every target installs what it needs into .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
PEERS := $(VENV)/.peers

.PHONY: install demo test test-slow bench readme-tables readme-photo readme-street clean

$(INSTALLED): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[export,test]'
	touch $@

# Test-only references: the dense CRF of pydensecrf2 (compiled from source) for the CRF
# agreement tests, the LiteRT interpreter that runs the TF DeepLab graphs `atrous convert`
# is checked against, and the tflite extra (litert-torch) behind `atrous export --format tflite`.
# If one cannot be installed, the tests that need it skip and say so.
$(PEERS): $(INSTALLED)
	$(PY) -m pip install --quiet --disable-pip-version-check 'pydensecrf2>=1.1' \
	  || echo "WARNING: pydensecrf2 could not be installed; CRF agreement tests will be skipped"
	$(PY) -m pip install --quiet --disable-pip-version-check 'ai-edge-litert>=1.2' \
	  || echo "WARNING: ai-edge-litert could not be installed; TFLite agreement tests will be skipped"
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[tflite]' \
	  || echo "WARNING: the tflite extra (litert-torch) could not be installed; TFLite export tests will be skipped"
	touch $@

install: $(INSTALLED)

demo: $(INSTALLED)
	$(VENV)/bin/atrous demo --out demo_out --overwrite

# Two workers, one core and one torch thread each (tests/conftest.py); a file's tests share a
# worker, so its module fixtures (exports, trained runs) are built once. Then the linter
# (the rules in pyproject.toml's [tool.ruff]).
test: $(PEERS)
	$(PY) -m ruff check atrous tests bench
	$(PY) -m ruff format --check atrous tests bench
	$(PY) -m pytest -q -n 2 --dist loadfile

test-slow: $(PEERS)
	$(PY) -m pytest -q -m slow

bench: $(PEERS)
	$(PY) -m pip install --quiet --disable-pip-version-check 'segmentation-models-pytorch>=0.3'
	$(PY) bench/run_all.py

# docs/weights.md's picture: a real photo segmented by the shipped VOC model.
readme-photo: $(INSTALLED)
	rm -rf demo_out/voc
	$(VENV)/bin/atrous predict --checkpoint voc docs/images/bird.jpg --out demo_out/voc --crf --panel --no-progress
	cp demo_out/voc/bird_panel.png docs/images/bird_panel.png

# The README's picture: the official Cityscapes model on its own sample scene (docs/images/street.jpg).
readme-street: $(INSTALLED)
	rm -rf demo_out/street
	$(VENV)/bin/atrous predict --checkpoint cityscapes docs/images/street.jpg --out demo_out/street --panel --no-progress
	cp demo_out/street/street_panel.png docs/images/cityscapes_panel.png

readme-tables: $(INSTALLED)
	$(PY) bench/readme_tables.py

clean:
	rm -rf $(VENV) demo_out build *.egg-info
