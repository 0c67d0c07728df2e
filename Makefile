# Two entry points (see README): `make run` and `make test`. Both create .venv on first use.
# torch: an existing torch (e.g. your CUDA build, visible through --system-site-packages) is kept; otherwise the
# CPU wheel torch==2.13.0 is installed (on our machines it comes from local disk, no multi-GB download).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
SLIDE ?=

.PHONY: run test bench setup clean-venv

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv --system-site-packages $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

setup: $(VENV)/.installed

run: $(VENV)/.installed
	$(VENV)/bin/cervixfm-viewer $(SLIDE)

test: $(VENV)/.installed
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q $(PYTEST_ARGS)

bench: $(VENV)/.installed
	$(PY) -c "import timm" 2>/dev/null || $(PY) -m pip install -q --no-deps timm huggingface_hub
	$(PY) benchmarks/backbone.py

clean-venv:
	rm -rf $(VENV)
