# Cascade. `make run` talks with you; `make test` runs the tests.
# Every target installs what it needs on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
CONFIG ?= configs/default.yaml
STAMP  := $(VENV)/.installed

.PHONY: install system-deps run test report clean

$(STAMP): requirements.txt requirements-dev.txt
	$(MAKE) system-deps PKGS="$(SYSTEM_PKGS)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==25.3
	$(PY) -m pip install -r requirements-dev.txt
	touch $@

install: $(STAMP)

# System packages (Debian): only what is missing, only where apt-get exists.
# Runtime: PortAudio (to build PyAudio), libspeexdsp (echo cancellation).
SYSTEM_PKGS := libsndfile1 portaudio19-dev libspeexdsp1
# Tests also drive a real audio stack: a PulseAudio server with virtual devices.
TEST_SYSTEM_PKGS := pulseaudio pulseaudio-utils libasound2-plugins
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

test: install
	@$(MAKE) --no-print-directory system-deps PKGS="$(TEST_SYSTEM_PKGS)"
	$(PY) -m pytest -q tests

# Latency report (eval/out/): CONFIG=... to choose the profile, ABLATION=1 to
# replay the conversation with each latency switch off in turn and as a naive cascade.
ABLATION ?=
report: install
	$(PY) -m eval.report --config $(CONFIG) $(if $(filter 1 yes true,$(ABLATION)),--ablation)

clean:
	rm -rf $(VENV) out eval/out .pytest_cache
