# Tasks for developers. Every target needs only the dev extra: pip install torch==2.13.0 && pip install -e ".[dev]"
SHELL := /bin/bash
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
# tiny test models run fastest on one thread; two notebook workers x 2 threads oversubscribe a 2-core machine
export OMP_NUM_THREADS ?= 1
PY ?= python

.PHONY: test lint check sync export nbtest pytest docs fuzz speed docs-check smoke wheel bnb-smoke qwen-probe

## test: the full offline test suite (CI runs this): lint, sync check, notebooks, pytest (tests/test_docs.py runs nbdev's docs
## processing on every notebook and checks the preview built from it, what `make docs` does)
test: lint sync nbtest pytest

## lint: ruff's correctness rules (unused, redefined and undefined names; settings in pyproject.toml) on the package,
## tests, tools, benchmarks and the notebooks (ruff reads .ipynb itself)
lint:
	$(PY) -m ruff check .

## check: everything a release needs: the tests, the benchmark smoke run, sdist+wheel, twine check, and the README
## quickstart run from the wheel in a fresh venv (torch + safetensors only)
check: test smoke wheel

## wheel: build sdist + wheel, twine check, install the wheel in a fresh venv and run the README quickstart from it
wheel:
	PY=$(PY) bash tools/wheel_check.sh

## fuzz: the hypothesis fuzz of every variant x rank x dtype x widths x targets, 2,000 random examples (CI runs 300)
fuzz:
	LL_FUZZ_EXAMPLES=2000 LL_FUZZ_RANDOM=1 $(PY) -m pytest -q -p no:cacheprovider tests/test_fuzz.py -s

## speed: benchmarks/speed.py: training step, memory and decode per token against PEFT (long: about 15 min on one thread)
speed:
	$(PY) benchmarks/speed.py

## bnb-smoke: every variant on a 4-bit and an 8-bit base for a few steps (CPU or CUDA), one line per case
bnb-smoke:
	$(PY) tools/bnb_smoke.py

## qwen-probe: Qwen3-0.6B-Base by name (needs the hub or --model PATH): one block's q/v, a few steps, save, reload, compare
qwen-probe:
	lora-lite-bench --preset probe $(PROBE_ARGS)

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

## docs: the offline preview site in _docs/: nbdev's own docs processing of every notebook (what nbdev_docs gives Quarto,
## into _proc/; show_doc cells run, the committed outputs kept), rendered by nbconvert's HTML exporter with the sidebar
## from nbs/sidebar.yml and MathJax from the dev extra (no CDN); fails on a notebook nbdev can't process, dead
## links/anchors, sidebar entries without a notebook, notebooks missing from the sidebar, visible directives.
## The real site: nbdev_docs (deploy workflow)
docs:
	$(PY) tools/check_docs.py

## docs-check: the preview in headless Chromium (apt-get install chromium; not run in CI): every formula typeset by
## MathJax without error, no raw TeX or directives visible, the sidebar's links answer; screenshot _docs/_check/lora.png
docs-check:
	$(PY) tools/docs_browser_check.py

## nbtest: run every notebook (nbdev_test prints only 'Success.' on success)
nbtest:
	nbdev_test --n_workers 2 && echo "nbdev_test: $$(ls nbs/*.ipynb | wc -l) notebooks passed"

## pytest: the tests/ suite on 2 workers (pytest-xdist; one test file per worker at a time); its last line is the summary
pytest:
	$(PY) -m pytest -q -p no:cacheprovider -n 2 --dist loadfile tests

## smoke: the benchmark's offline smoke preset
smoke:
	lora-lite-bench --preset smoke
