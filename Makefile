# The two set-up commands of the README: `make serve` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Debian packages the tests use as real peers: DCMTK (storescu, findscu, movescu, getscu,
# storescp, dcmqrscp), zip, and Orthanc with its DICOMweb plugin as an upstream PACS.
TEST_DEBS := dcmtk zip orthanc orthanc-dicomweb

# The DIMSE test modules, run a second time with the wire layer's fast path off
# ([dicom].fast_path = false in every node the harness starts): pynetdicom's own
# code paths must pass them too.  The C-STORE SCP, C-FIND, C-MOVE / C-GET (and
# their sending path) and the hostile cases; ~2 minutes on a quiet machine.
DIMSE_TESTS := tests/test_storage_scp.py tests/test_cfind.py tests/test_retrieve.py \
	tests/test_wire_hostile.py tests/test_wire_disk_full.py

.PHONY: serve test install install-test system-deps lint

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
	DICOM_NODE_TEST_FAST_PATH=false $(BIN)/python -m pytest -q $(DIMSE_TESTS)

lint: install-test
	$(BIN)/ruff check node tests bench migrations
