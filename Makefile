# Tasks for developers. Every target needs only the dev extra: pip install torch==2.13.0 && pip install -e ".[dev]"
SHELL := /bin/bash
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
PY ?= python

.PHONY: test sync export nbtest pytest docs smoke

## test: the full offline test suite (CI runs this): sync check, notebooks, pytest
test: sync docs nbtest pytest

## export: notebooks -> lora_lite/, clean notebooks, regenerate README.md
export:
	nbdev_export && nbdev_clean && $(PY) tools/make_readme.py

## sync: fail if nbdev_export / nbdev_clean / the README generator would change a committed file
sync:
	nbdev_export && nbdev_clean
	$(PY) tools/make_readme.py --check
	@if git rev-parse --git-dir >/dev/null 2>&1; then \
	  if [ -n "$$(git status --porcelain -- lora_lite nbs README.md)" ]; then \
	    echo "nbdev_export/nbdev_clean changed committed files (run 'make export' and commit):"; \
	    git status --porcelain -- lora_lite nbs README.md; git --no-pager diff --stat -- lora_lite nbs; exit 1; \
	  else echo "notebooks, package and README are in sync"; fi; \
	else echo "not a git checkout: sync check skipped"; fi

## docs: render every notebook to HTML offline (_docs/) and check intra-site links and the sidebar
docs:
	$(PY) tools/check_docs.py

## nbtest: run every notebook (nbdev_test prints only 'Success.' on success)
nbtest:
	nbdev_test --n_workers 2 && echo "nbdev_test: $$(ls nbs/*.ipynb | wc -l) notebooks passed"

## pytest: the tests/ suite; its last line is the summary (N passed, ...)
pytest:
	$(PY) -m pytest -q -p no:cacheprovider tests

## smoke: the benchmark's offline smoke preset
smoke:
	lora-lite-bench --preset smoke
