# The two set-up commands of the README: `make serve` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Debian packages the tests use as real peers: DCMTK (storescu, findscu, movescu, getscu,
# storescp, dcmqrscp), zip, Orthanc with its DICOMweb plugin as an upstream PACS (and its GDCM
# plugin, the transcoding reference of bench/transcode.py), and Chromium with its driver for the
# web console's browser tests.
TEST_DEBS := dcmtk zip orthanc orthanc-dicomweb orthanc-gdcm chromium chromium-driver

.PHONY: serve test install install-test system-deps lint viewer

# Stamps: pip runs again only when pyproject.toml changed (or the venv is new),
# so a second `make serve` starts the node without reinstalling.
INSTALLED := $(VENV)/.installed
INSTALLED_TEST := $(VENV)/.installed-test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(INSTALLED): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	@touch $@

$(INSTALLED_TEST): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	@touch $@ $(INSTALLED)

install: $(INSTALLED)

install-test: system-deps $(INSTALLED_TEST)

system-deps:
	@missing=""; for p in $(TEST_DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

serve: install
	@$(BIN)/dicom-node serve --config config.toml

test: install-test
	$(BIN)/ruff check node tests bench migrations
	$(BIN)/python -m pytest -q

# The OHIF viewer served at /viewer/: the prebuilt @ohif/app from the npm registry (needs npm).
viewer: install
	$(BIN)/dicom-node viewer install --config config.toml

lint: install-test
	$(BIN)/ruff check node tests bench migrations
