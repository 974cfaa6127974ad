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

# The tiny checkpoints, laid out as their Hugging Face repositories are (export/tiny_hub.py), exported with the very
# command that exports the real ones.
TINY_HUB := artifacts/tiny-hub
TINY_LAYOUTS := $(TINY_HUB)/.built
$(TINY_LAYOUTS): $(INSTALLED) export/tiny.py export/tiny_hub.py export/hub.py export/postfuse.py
	$(PY) -m export.tiny_hub
	touch $@

export: $(EXPORTED)
model_repository/objectclear_unet/1/model.onnx: $(TINY_LAYOUTS) export/objectclear.py export/onnx_export.py
	$(PY) -m export objectclear --source $(TINY_HUB)/jixin0101/ObjectClear
model_repository/sam3_detector/1/model.onnx: $(TINY_LAYOUTS) export/sam3.py export/onnx_export.py
	$(PY) -m export sam3 --source $(TINY_HUB)/facebook/sam3
model_repository/flux_schnell_transformer/1/model.onnx: $(TINY_LAYOUTS) export/flux.py export/onnx_export.py
	$(PY) -m export flux-schnell --source $(TINY_HUB)/black-forest-labs/FLUX.1-schnell
model_repository/flux_dev_transformer/1/model.onnx: $(TINY_LAYOUTS) export/flux.py export/onnx_export.py
	$(PY) -m export flux-dev --source $(TINY_HUB)/black-forest-labs/FLUX.1-dev
model_repository/flux_fill_transformer/1/model.onnx: $(TINY_LAYOUTS) export/flux.py export/onnx_export.py
	$(PY) -m export flux-fill --source $(TINY_HUB)/black-forest-labs/FLUX.1-Fill-dev

# `make demo SOURCE=hub`: the real checkpoints from the Hugging Face Hub (README, "Real weights"), exported into their
# own repository beside the tiny one, after a check that this machine can reach, store and hold them.
SOURCE ?= tiny
HUB_REPOSITORY := artifacts/hub-repository
HUB_PIPELINES := objectclear sam3 flux-schnell flux-fill
ifeq ($(SOURCE),hub)
demo: $(HUB_REPOSITORY)/.exported
	$(PY) -m client.demo --repository $(HUB_REPOSITORY)
else
demo: $(EXPORTED)
	$(PY) -m client.demo
endif
$(HUB_REPOSITORY)/.exported: $(EXPORTED)
	$(PY) -m export.hub check $(HUB_PIPELINES) --repository $(HUB_REPOSITORY)
	$(PY) -m server.repository --runtime onnxruntime --out $(HUB_REPOSITORY) --copy
	for pipeline in $(HUB_PIPELINES); do $(PY) -m export $$pipeline --repository $(HUB_REPOSITORY) || exit 1; done
	touch $@

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
