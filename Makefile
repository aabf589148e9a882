# Cascade. `make run` talks with you; `make test` runs the tests.
# Every target installs what it needs on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
CONFIG ?= configs/default.yaml
STAMP  := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test

.PHONY: install system-deps run test report quality soak serve loadtest check llama-serve vllm-serve clean

# llama.cpp is compiled here (no wheel on PyPI). Not for this CPU only (-march=native):
# a portable AVX2 build runs on any x86-64 CPU of the last decade, and native builds
# crashed (SIGILL in AMX tile loads) on a Xeon whose VM does not enable AMX. Built
# without pip's wheel cache, so a build made with other flags is never reused.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON

# Runtime: what `make run` needs.
$(STAMP): requirements.txt requirements-nodeps.txt
	$(MAKE) system-deps PKGS="$(SYSTEM_PKGS)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==25.3
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip install --no-cache-dir --no-deps \
	  $$(grep -E '^llama_cpp_python==' requirements.txt | cut -d' ' -f1)
	$(PY) -m pip install -r requirements.txt
	$(PY) -m pip install --no-deps -r requirements-nodeps.txt
	touch $@

# Tests: also pytest, llama.cpp's server and the optional Coqui extra (torch).
$(TEST_STAMP): $(STAMP) requirements-dev.txt requirements-coqui.txt
	$(MAKE) system-deps PKGS="$(TEST_SYSTEM_PKGS)"
	$(PY) -m pip install -r requirements-dev.txt
	touch $@

install: $(STAMP)

# System packages (Debian): only what is missing, only where apt-get exists.
# Runtime: PortAudio (to build PyAudio), libspeexdsp (echo cancellation),
# espeak-ng (the fast profile's TTS, configs/fast.yaml).
SYSTEM_PKGS := libsndfile1 portaudio19-dev libspeexdsp1 espeak-ng
# Tests also drive a real audio stack (a PulseAudio server with virtual devices) and a
# real browser (headless Chromium, driven by Selenium through chromium-driver).
TEST_SYSTEM_PKGS := pulseaudio pulseaudio-utils libasound2-plugins chromium chromium-driver
PKGS ?= $(SYSTEM_PKGS)
system-deps:
	@missing=""; for p in $(PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null; then \
	    echo "installing system packages:$$missing"; \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	  else echo "please install:$$missing"; exit 1; fi; \
	fi

run: install
	$(PY) -m pipeline run --config $(CONFIG)

test: $(TEST_STAMP)
	$(PY) -m pytest -q tests

# Latency report (eval/out/): CONFIG=... to choose the profile, ABLATION=1 to
# replay the conversation with each latency switch off in turn and as a naive cascade.
# Also the compute floor (eval/floor.py): the same utterances, the critical path's steps alone.
# SLOW=0.4: an emulated slower CPU, every thread at 40% of a core (cgroup v1 quotas); check
# the slow-down with `eval.bench_asr --slow 0.4` (here: 2.9x short window, 3.3x standard).
ABLATION ?=
SLOW ?=
report: install
	$(PY) -m eval.report --config $(CONFIG) $(if $(filter 1 yes true,$(ABLATION)),--ablation) \
	  $(if $(SLOW),--slow $(SLOW))

# Reply quality: the spoken question set (eval/questions.py) through each profile, same run
# (eval/out/quality.md, quality.json): answer, echo and distinct-reply rates beside V2V.
# VARIANTS=1: the first profile again with each reply-quality technique off in turn;
# SET=heldout: the second question set, not used to tune the default profile.
PROFILES ?= configs/default.yaml configs/quality.yaml
VARIANTS ?=
quality: install
	$(PY) -m eval.quality $(foreach p,$(PROFILES),--config $(p)) \
	  $(if $(filter 1 yes true,$(VARIANTS)),--variants) $(if $(SET),--set $(SET))

# Soak: a looped corpus conversation with barge-ins for MINUTES minutes, in real time
# (eval/out/soak.json, soak.png): RSS, threads, descriptors, V2V drift, lost lines.
# LIVE=1: the live pipeline through PulseAudio virtual devices (soak-live.json, .png).
MINUTES ?= 120
soak: install
	$(PY) -m eval.soak --config $(CONFIG) --minutes $(MINUTES) \
	  $(if $(filter 1 yes true,$(LIVE)),--live)

# The OpenAI Realtime-compatible WebSocket server (/v1/realtime), its web page (/),
# /healthz and /metrics, on 127.0.0.1:8765 (server: in the YAML; PORT=N to override).
PORT ?=
serve: install
	$(PY) -m pipeline serve --config $(CONFIG) $(if $(PORT),--port $(PORT))

# K simulated clients (the openai package's realtime client) speaking corpus clips in
# real time against the server, K = CLIENTS (eval/out/loadtest.md, loadtest.json).
CLIENTS ?= 1 2 4 8
loadtest: $(TEST_STAMP)
	$(PY) -m eval.loadtest --config $(CONFIG) --clients $(CLIENTS)

# Validate a profile, load each stage and run a tiny request through it.
check: install
	$(PY) -m pipeline check --config $(CONFIG)

# The bundled GGUF behind llama.cpp's OpenAI-compatible server (configs/server.yaml).
LLAMA_PORT ?= 8080
llama-serve: install
	$(PY) -m llama_cpp.server --model "$$($(PY) -c 'from stages.llm_llama_cpp import resolve_model; print(resolve_model("smollm2-135m-instruct"))')" \
	  --model_alias smollm2-135m-instruct --host 127.0.0.1 --port $(LLAMA_PORT) --n_ctx 2048 --n_threads 1 --n_threads_batch 2

# vLLM's OpenAI-compatible server (configs/gpu-vllm.yaml), tuned for latency:
# prefix caching on (the system prompt and history are prefilled once), small
# batches (few sequences at a time), TP=n GPUs per replica; run several
# replicas behind a load balancer to scale out.
MODEL ?=
TP ?= 1
VLLM_PORT ?= 8000
vllm-serve:
	@if ! $(PY) -c "import vllm" 2>/dev/null && ! command -v vllm >/dev/null; then \
	  echo "vLLM is not installed. On a machine with an NVIDIA GPU: $(PY) -m pip install -r requirements-gpu.txt"; exit 1; fi
	@if [ -z "$(MODEL)" ]; then echo "usage: make vllm-serve MODEL=<model name or path> [TP=1]"; exit 1; fi
	$(PY) -m vllm.entrypoints.openai.api_server --model "$(MODEL)" --host 127.0.0.1 --port $(VLLM_PORT) \
	  --enable-prefix-caching --max-num-seqs 8 --max-model-len 4096 \
	  --gpu-memory-utilization 0.85 --tensor-parallel-size $(TP)

clean:
	rm -rf $(VENV) out eval/out .pytest_cache
