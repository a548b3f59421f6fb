# gmmseg-lab: `make demo` and `make test` each set up everything on a fresh machine.
#
# torch is installed first at exactly 2.13.0 and a constraints file keeps every later step (and
# every isolated build environment, through PIP_CONSTRAINT) from replacing it with another build.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.gmmseg-lab-installed
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup demo report-cpu test bench toy clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) -c "import torch, mmseg, mmcv, mmengine; assert torch.__version__.startswith('2.13.0'), torch.__version__; print('torch', torch.__version__, '| mmseg', mmseg.__version__, '| mmcv', mmcv.__version__, '| mmengine', mmengine.__version__)"
	touch $(STAMP)

# The main job: every notebook executed on the embedded quick data set, as an HTML report.
REPORT ?= runs/report-quick
demo: $(STAMP)
	$(PY) -m gmmseg_lab report --preset quick --out $(REPORT)
	@echo "open $(CURDIR)/$(REPORT)/index.html"

# The README's numbers (about an hour on 2 CPU cores; rerunning reuses finished work).
report-cpu: $(STAMP)
	$(PY) -m gmmseg_lab report --preset cpu --out runs/report-cpu --jobs 2

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) bench/bench_gmm.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
