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

.PHONY: setup demo report-cpu test lint format bench docs clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[test,docs]"
	$(PY) -c "import torch, mmseg, mmcv, mmengine; assert torch.__version__.startswith('2.13.0'), torch.__version__; print('torch', torch.__version__, '| mmseg', mmseg.__version__, '| mmcv', mmcv.__version__, '| mmengine', mmengine.__version__)"
	touch $(STAMP)

# The main job: GMMSeg and its softmax twin on the ImageNet-pretrained encoder, two seeds, every
# notebook but the ablation executed into an HTML report (under 10 minutes on 2 cores, .venv in place).
REPORT ?= runs/report-demo
demo: $(STAMP)
	$(PY) -m gmmseg_lab report --preset demo --out $(REPORT) --jobs 2
	@echo "open $(CURDIR)/$(REPORT)/index.html"

# The README's numbers (about 1.5 hours on 2 CPU cores; rerunning reuses finished work).
report-cpu: $(STAMP)
	$(PY) -m gmmseg_lab report --preset cpu --out runs/report-cpu --jobs 2

test: $(STAMP)
	$(PY) -m pytest

# ruff: lint (pyflakes, pycodestyle, import order) and the formatter's check, as CI runs them.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: $(STAMP)
	$(PY) bench/bench_gmm.py

# The documentation site (mkdocs.yml, docs/) into site/: every warning is an error (--strict), and the
# pages work offline (open site/index.html; MathJax and the search come with the site).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site
	@echo "open $(CURDIR)/site/index.html"

clean:
	rm -rf $(VENV) .pytest_cache build site *.egg-info
