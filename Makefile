# The two set-up commands of the README: `make serve` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Debian packages the tests use as real peers: DCMTK (storescu, findscu, movescu, getscu,
# storescp, dcmqrscp), zip, Orthanc with its DICOMweb plugin as an upstream PACS (and its GDCM
# plugin, the transcoding reference of bench/transcode.py), Chromium with its driver for the
# web console's browser tests, and PostgreSQL (the suite runs a private server for its second pass).
TEST_DEBS := dcmtk zip orthanc orthanc-dicomweb orthanc-gdcm chromium chromium-driver postgresql
# Extra pytest arguments, e.g. make test PYTEST_ARGS="-x tests/test_cfind.py".
PYTEST_ARGS ?=

# The DIMSE test modules, run a second time with the wire layer's fast path off
# ([dicom].fast_path = false in every node the harness starts): pynetdicom's own
# code paths must pass them too.  The C-STORE SCP, C-FIND, C-MOVE / C-GET (and
# their sending path) and the hostile cases.
DIMSE_TESTS := tests/test_storage_scp.py tests/test_cfind.py tests/test_retrieve.py \
	tests/test_wire_hostile.py tests/test_wire_disk_full.py tests/test_transcode_doors.py

.PHONY: serve test test-sqlite test-postgresql test-nofast install install-test system-deps lint viewer

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

# The whole suite twice, on SQLite and on PostgreSQL ($$DICOM_NODE_TEST_DB), both at once:
# the runs mostly wait on peers and subprocesses, so together they take little more
# than one.  Each has its own temp folder; the outputs are shown one after the other.
test: install-test
	$(BIN)/ruff check node tests bench migrations
	@base=$$(mktemp -d); \
	DICOM_NODE_TEST_DB=sqlite $(BIN)/python -m pytest -q -p no:cacheprovider --basetemp=$$base/sqlite \
	  $(PYTEST_ARGS) >$$base/sqlite.log 2>&1 & sqlite=$$!; \
	DICOM_NODE_TEST_DB=postgresql $(BIN)/python -m pytest -q -p no:cacheprovider --basetemp=$$base/postgresql \
	  $(PYTEST_ARGS) >$$base/postgresql.log 2>&1 & postgresql=$$!; \
	DICOM_NODE_TEST_DB=sqlite DICOM_NODE_TEST_FAST_PATH=false $(BIN)/python -m pytest -q -p no:cacheprovider \
	  --basetemp=$$base/nofast $(DIMSE_TESTS) >$$base/nofast.log 2>&1 & nofast=$$!; \
	wait $$sqlite; rs=$$?; wait $$postgresql; rp=$$?; wait $$nofast; rn=$$?; \
	echo "== SQLite index (exit $$rs)"; cat $$base/sqlite.log; \
	echo "== PostgreSQL index (exit $$rp)"; cat $$base/postgresql.log; \
	echo "== DIMSE modules with [dicom].fast_path = false (exit $$rn)"; cat $$base/nofast.log; \
	rm -rf $$base; [ $$rs = 0 ] && [ $$rp = 0 ] && [ $$rn = 0 ]

test-sqlite: install-test
	DICOM_NODE_TEST_DB=sqlite $(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-postgresql: install-test
	DICOM_NODE_TEST_DB=postgresql $(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-nofast: install-test
	DICOM_NODE_TEST_FAST_PATH=false $(BIN)/python -m pytest -q $(DIMSE_TESTS)

# The OHIF viewer served at /viewer/: the prebuilt @ohif/app from the npm registry (needs npm).
viewer: install
	$(BIN)/dicom-node viewer install --config config.toml

lint: install-test
	$(BIN)/ruff check node tests bench migrations
