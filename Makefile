# Cascade. `make run` talks with you; `make test` runs the tests.
# Every target installs what it needs on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
CONFIG ?= configs/default.yaml
STAMP  := $(VENV)/.installed

.PHONY: install system-deps run test report clean

$(STAMP): requirements.txt requirements-dev.txt
	$(MAKE) system-deps
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==25.3
	$(PY) -m pip install -r requirements-dev.txt
	touch $@

install: $(STAMP)

# System packages (Debian): only what is missing, only where apt-get exists.
SYSTEM_PKGS := libsndfile1
system-deps:
	@missing=""; for p in $(SYSTEM_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
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
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) out eval/out .pytest_cache
