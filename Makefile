# Two commands do all the set-up on a fresh machine:
#   make run   start pushgate on its embedded defaults (SQLite in ./data, MQTT 1883, HTTP 8080)
#   make test  lint and run the whole test suite
VENV ?= .venv
PYTHON ?= python3
STAMP := $(VENV)/.installed-stamp
# Debian packages the tests drive as real clients.
SYSTEM_PACKAGES := mosquitto-clients curl chromium

.PHONY: run test lint system-deps clean

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

system-deps:
	@missing=""; \
	for pkg in $(SYSTEM_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$pkg 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$missing; \
	fi

run: $(STAMP)
	$(VENV)/bin/pushgate serve

lint: $(STAMP)
	$(VENV)/bin/ruff check gateway broker http_bridge tests bench
	$(VENV)/bin/ruff format --check gateway broker http_bridge tests bench

test: $(STAMP) system-deps lint
	$(VENV)/bin/python -m pytest

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
