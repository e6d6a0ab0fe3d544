# Two commands for a newcomer: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP_CORE := $(VENV)/.installed-core
STAMP_DEV := $(VENV)/.installed-dev
DEMO_DIR ?=
DEMO_OUT ?= runs/demo

.PHONY: demo test lint venv clean bench browser train-demo train-demo-grounded

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip wheel setuptools

# torch/torchvision first (local copy on the build machines), then sam2 without build isolation
# and without its optional CUDA extension, then the package itself.
$(STAMP_CORE): $(PY) pyproject.toml
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	SAM2_BUILD_CUDA=0 $(PIP) install -q --no-build-isolation sam2==1.1.0
	$(PIP) install -q -e .
	touch $@

$(STAMP_DEV): $(STAMP_CORE)
	$(PIP) install -q -e '.[dev,rl]'
	touch $@

venv: $(STAMP_CORE)

demo: $(STAMP_CORE)
	$(VENV)/bin/medseg-agent demo --out $(DEMO_OUT) $(if $(DEMO_DIR),--data $(DEMO_DIR))

# The browser tests drive Debian's headless Chromium through Playwright (its own browser download is
# not used); install the package when it is missing (root, or sudo).
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

browser:
	@[ -x $(CHROMIUM) ] || { $(SUDO) apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

# The two-stage recipe, learning on this machine: synthetic scans -> expert -> SFT -> GRPO -> table.
TRAIN_DEMO_OUT ?= runs/train-demo
train-demo: $(STAMP_DEV)
	$(VENV)/bin/medseg-agent train demo --out $(TRAIN_DEMO_OUT)

# The same recipe from a grounding-pretrained base, all on this machine: the first-action probe trains
# the demo's model on first boxes (4,900 steps of 64, the rate falling from step 4,400; then 1,500 more
# steps, back at the full rate and falling again from step 5,900: ~2.3 h on 2 CPU cores), then train
# demo starts stage 1 from it over 3 seeds, 60 GRPO steps of 8 prompts. Every step resumes where a
# rerun finds it stopped.
GROUNDING_OUT ?= runs/grounding
THREADS ?= $(shell nproc)
GROUNDING_PROBE = $(PY) benchmarks/first_action_probe.py --task full --patch-size 8 --threads $(THREADS) \
	--train-scenes 24000 --draw-workers $(THREADS) --loader-workers 1 --batch 64 --probe-every 250 --out $(GROUNDING_OUT)
train-demo-grounded: $(STAMP_DEV)
	$(GROUNDING_PROBE) --steps 4900 --anneal-from 4400 --anneal-to 0.1
	$(GROUNDING_PROBE) --steps 6400 --anneal-from 5900 --anneal-to 0.1
	$(VENV)/bin/medseg-agent train demo --base-model $(GROUNDING_OUT)/checkpoint --seeds 0,1,2 --no-references \
		--set rl_prompts=8 --set rl_steps=60 --out $(TRAIN_DEMO_OUT)-grounded

test: $(STAMP_DEV) browser
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest -q

lint: $(STAMP_DEV)
	$(VENV)/bin/ruff check src tests benchmarks

bench: $(STAMP_CORE)
	$(PY) benchmarks/environment_overhead.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
