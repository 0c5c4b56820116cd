# The two set-up commands of the README: `make serve` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Debian packages the tests use as real peers: DCMTK (storescu, findscu, movescu, getscu,
# storescp, dcmqrscp), zip, Orthanc with its DICOMweb plugin as an upstream PACS, and
# Chromium with its driver for the web console's browser tests.
TEST_DEBS := dcmtk zip orthanc orthanc-dicomweb chromium chromium-driver

.PHONY: serve test install install-test system-deps lint viewer

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q -e .

install-test: $(BIN)/python system-deps
	$(BIN)/pip install -q -e '.[test]'

system-deps:
	@missing=""; for p in $(TEST_DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

serve: install
	$(BIN)/dicom-node serve --config config.toml

test: install-test
	$(BIN)/ruff check node tests bench migrations
	$(BIN)/python -m pytest -q

# The OHIF viewer served at /viewer/: the prebuilt @ohif/app from the npm registry (needs npm).
viewer: install
	$(BIN)/dicom-node viewer install --config config.toml

lint: install-test
	$(BIN)/ruff check node tests bench migrations
