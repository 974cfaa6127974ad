# Everything a newcomer needs: `make demo` (install, export the tiny models, serve, run a real photo) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
EXPORTED := model_repository/objectclear_unet/1/model.onnx

.PHONY: install export demo test serve clean

install: $(INSTALLED)
$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

export: $(EXPORTED)
$(EXPORTED): $(INSTALLED) export/*.py
	$(PY) -m export objectclear --tiny

demo: $(EXPORTED)
	$(PY) -m client.demo

# Keeps a server in the foreground for your own clients: make serve PRESET=quality
PRESET ?= balanced
serve: $(EXPORTED)
	$(PY) -m server --preset $(PRESET)

test: $(EXPORTED)
	$(PY) -m pytest

clean:
	rm -rf artifacts outputs model_repository/*/1/*.onnx model_repository/*/1/*.onnx.data model_repository/*/1/*.npz
