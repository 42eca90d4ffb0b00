# Two commands do all the set-up on a fresh machine:
#   make run   start pushgate on its embedded defaults (SQLite in ./data, MQTT 1883, HTTP 8080)
#   make test  lint and run the whole test suite
VENV ?= .venv
PYTHON ?= python3
STAMP := $(VENV)/.installed-stamp
# Debian packages the tests drive as real clients (g++ compiles the firmware sketches against stubs;
# chromium runs the service worker).
SYSTEM_PACKAGES := mosquitto-clients curl g++ chromium
# Debian packages the benchmark runs next to pushgate (the reference broker).
BENCH_PACKAGES := mosquitto
SPEED_STAMP := $(VENV)/.speed-stamp
PACKAGES ?= $(SYSTEM_PACKAGES)

.PHONY: run test lint system-deps bench clean

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

system-deps:
	@missing=""; \
	for pkg in $(PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$pkg 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$missing; \
	fi

# uvloop (pushgate[speed]) for pushgate serve, the stock amqtt baseline and the load generator alike.
$(SPEED_STAMP): $(STAMP)
	$(VENV)/bin/python -m pip install --quiet -e '.[test,speed]'
	touch $(SPEED_STAMP)

# Relay figures of stock amqtt, pushgate and mosquitto in one run, then the push path (bench/README.md).
# BENCH_ARGS=--quick for a short run.
bench: $(SPEED_STAMP)
	@$(MAKE) --no-print-directory system-deps PACKAGES="$(BENCH_PACKAGES)"
	cd bench && $(abspath $(VENV))/bin/python relay.py $(BENCH_ARGS)

run: $(STAMP)
	$(VENV)/bin/pushgate serve

lint: $(STAMP)
	$(VENV)/bin/ruff check gateway broker http_bridge tests bench
	$(VENV)/bin/ruff format --check gateway broker http_bridge tests bench

test: $(STAMP) system-deps lint
	$(VENV)/bin/python -m pytest

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
