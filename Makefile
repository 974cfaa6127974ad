# Everything a newcomer needs: `make demo` (install, export the tiny models, serve, run a real photo) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
EXPORTED := model_repository/objectclear_unet/1/model.onnx model_repository/sam3_detector/1/model.onnx \
	model_repository/flux_schnell_transformer/1/model.onnx model_repository/flux_dev_transformer/1/model.onnx \
	model_repository/flux_fill_transformer/1/model.onnx

.PHONY: install export demo test serve clean
# Debian's Prometheus server, unpacked (tests/test_metrics.py scrapes the test server with it): artifacts/prometheus/
PROMETHEUS := artifacts/prometheus/prometheus

install: $(INSTALLED)
$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

export: $(EXPORTED)
model_repository/objectclear_unet/1/model.onnx: $(INSTALLED) export/objectclear.py export/onnx_export.py export/tiny.py
	$(PY) -m export objectclear --tiny
model_repository/sam3_detector/1/model.onnx: $(INSTALLED) export/sam3.py export/onnx_export.py export/tiny.py
	$(PY) -m export sam3 --tiny
model_repository/flux_schnell_transformer/1/model.onnx: $(INSTALLED) export/flux.py export/onnx_export.py export/tiny.py
	$(PY) -m export flux-schnell --tiny
model_repository/flux_dev_transformer/1/model.onnx: $(INSTALLED) export/flux.py export/onnx_export.py export/tiny.py
	$(PY) -m export flux-dev --tiny
model_repository/flux_fill_transformer/1/model.onnx: $(INSTALLED) export/flux.py export/onnx_export.py export/tiny.py
	$(PY) -m export flux-fill --tiny

demo: $(EXPORTED)
	$(PY) -m client.demo

# Keeps a server in the foreground for your own clients: make serve PRESET=quality [RUNTIME=torch|tensorrt|...]
PRESET ?= balanced
RUNTIME ?= onnxruntime
serve: $(EXPORTED)
	$(PY) -m server --preset $(PRESET) --runtime $(RUNTIME)

test: $(EXPORTED) $(PROMETHEUS)
	$(PY) -m pytest

# perf_analyzer from the tritonclient 2.50.0 wheel (not pip-installable beside onnx): artifacts/perf_analyzer/
PERF_ANALYZER := artifacts/perf_analyzer/perf_analyzer
.PHONY: perf-analyzer
perf-analyzer: $(PERF_ANALYZER)
$(PERF_ANALYZER): scripts/install_perf_analyzer.sh
	bash scripts/install_perf_analyzer.sh

clean:
	rm -rf artifacts outputs model_repository/*/1/*.onnx model_repository/*/1/*.onnx.data model_repository/*/1/*.npz \
		model_repository/*/1/processor model_repository/*/1/pipeline

.PHONY: prometheus
prometheus: $(PROMETHEUS)
$(PROMETHEUS): scripts/install_prometheus.sh
	bash scripts/install_prometheus.sh
