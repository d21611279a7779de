# pgauth — the only commands a user needs:
#   make install   set up this machine, build, install into PostgreSQL 15, run the demo
#   make test      every test suite (unit, pg_test, pg_regress, integration)
#   make bench     benchmarks, each figure beside its anchor
# Everything is idempotent; run as root on Debian 12 (see README "Install").

SHELL        := /bin/bash
PG_MAJOR     ?= 15
PG_CONFIG    ?= /usr/lib/postgresql/$(PG_MAJOR)/bin/pg_config
PGRX_VERSION := 0.18.1
DEMO_DB      ?= pgauth_demo
# A throwaway cluster for pg_regress and the integration tests (trust auth, loopback only).
TEST_PORT    ?= 5499
TEST_ROOT    ?= /tmp/pgauth-test
PGRX_PGDATA  ?= /tmp/pgauth-pgrx
APT_PACKAGES := postgresql-$(PG_MAJOR) postgresql-server-dev-$(PG_MAJOR) clang libclang-dev sudo pgbouncer argon2
PIP_PACKAGES := pynacl argon2-cffi passlib bcrypt cryptography pyotp psycopg[binary] pyjwt 'fido2>=2,<3'
export PATH  := $(HOME)/.cargo/bin:$(PATH)

.PHONY: all setup setup-apt setup-pgrx setup-python build install-ext install demo test unit pgtest \
        regress integration bench test-cluster-start test-cluster-stop fmt lint clean

all: install

## setup: everything this machine needs, installed only when missing.
setup: setup-apt setup-pgrx setup-python

setup-apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

setup-pgrx:
	@if ! cargo pgrx --version 2>/dev/null | grep -q "$(PGRX_VERSION)"; then \
	  cargo install cargo-pgrx --version $(PGRX_VERSION) --locked; \
	fi
	@if ! grep -qs "pg$(PG_MAJOR)" $(HOME)/.pgrx/config.toml; then \
	  cargo pgrx init --pg$(PG_MAJOR) $(PG_CONFIG); \
	fi

setup-python:
	@python3 -c "import nacl, argon2, passlib, bcrypt, cryptography, pyotp, psycopg, jwt, fido2, importlib.metadata as m; assert int(m.version('fido2').split('.')[0]) >= 2" 2>/dev/null || \
	  pip install -q $(PIP_PACKAGES) 2>/dev/null || pip install -q --break-system-packages $(PIP_PACKAGES)

## build + install the extension into the system PostgreSQL (release mode).
install-ext: setup-apt setup-pgrx
	cargo pgrx install --release --pg-config $(PG_CONFIG)

## install: set up, build, install, start Debian's cluster, create the demo database, run the demo.
install: setup install-ext demo

# The demo cluster's master key: generated once, never overwritten, mode 600, owned by postgres.
MASTER_KEY   ?= /etc/postgresql/$(PG_MAJOR)/main/pgauth_master.key

demo:
	@if [ ! -f $(MASTER_KEY) ]; then \
	  umask 077 && openssl rand -hex 32 > $(MASTER_KEY) && chown postgres: $(MASTER_KEY) && chmod 600 $(MASTER_KEY); \
	  echo "generated the master key $(MASTER_KEY) (back it up: data encrypted under it is lost without it)"; \
	fi
	@mkdir -p /etc/postgresql/$(PG_MAJOR)/main/conf.d
	@# pgauth must be preloaded: its attempt counters live in shared memory (README, Security model).
	@printf "shared_preload_libraries = 'pgauth'\npgauth.master_key_file = '$(MASTER_KEY)'\n" > /etc/postgresql/$(PG_MAJOR)/main/conf.d/pgauth.conf
	@if pg_lsclusters -h | grep -q "^$(PG_MAJOR) *main .*online"; then \
	  if sudo -u postgres psql -XAtq -c "SHOW shared_preload_libraries" | grep -qw pgauth; then \
	    pg_ctlcluster $(PG_MAJOR) main reload; else pg_ctlcluster $(PG_MAJOR) main restart; fi; \
	else pg_ctlcluster $(PG_MAJOR) main start; fi
	@sudo -u postgres psql -XAtq -c "SELECT 1 FROM pg_database WHERE datname = '$(DEMO_DB)'" | grep -q 1 || \
	  sudo -u postgres createdb $(DEMO_DB)
	@sudo -u postgres psql -Xq -v ON_ERROR_STOP=1 -d $(DEMO_DB) \
	  -c "DROP EXTENSION IF EXISTS pgauth CASCADE" -c "CREATE EXTENSION pgauth"
	sudo -u postgres psql -X -v ON_ERROR_STOP=1 -d $(DEMO_DB) -f examples/quickstart.sql

## test: every suite; fails if any fails.
test: setup unit pgtest install-ext regress integration
	@echo "all test suites passed"

unit:
	cargo test --features pg$(PG_MAJOR) -- --skip pg_tests::

pgtest: setup-apt setup-pgrx
	mkdir -p $(PGRX_PGDATA) && chown postgres: $(PGRX_PGDATA)
	cargo pgrx test pg$(PG_MAJOR) --runas postgres --pgdata $(PGRX_PGDATA)

test-cluster-start:
	PG_MAJOR=$(PG_MAJOR) TEST_PORT=$(TEST_PORT) TEST_ROOT=$(TEST_ROOT) PG_BIN=$$($(PG_CONFIG) --bindir) bash tests/cluster.sh start

test-cluster-stop:
	PG_MAJOR=$(PG_MAJOR) TEST_PORT=$(TEST_PORT) TEST_ROOT=$(TEST_ROOT) PG_BIN=$$($(PG_CONFIG) --bindir) bash tests/cluster.sh stop

regress: test-cluster-start
	rm -rf pg_test/results
	$$($(PG_CONFIG) --pkglibdir)/pgxs/src/test/regress/pg_regress \
	  --bindir=$$($(PG_CONFIG) --bindir) --inputdir=pg_test --outputdir=pg_test \
	  --host=$(TEST_ROOT)/socket --port=$(TEST_PORT) --user=postgres --dbname=pgauth_regress \
	  $$(ls pg_test/sql/*.sql | xargs -n1 basename | sed 's/\.sql$$//' | sort) \
	  || { cat pg_test/regression.diffs 2>/dev/null | head -200; exit 1; }

integration: test-cluster-start
	cd tests && PGAUTH_TEST_DSN="host=127.0.0.1 port=$(TEST_PORT) user=postgres dbname=postgres" TEST_ROOT=$(TEST_ROOT) PG_BIN=$$($(PG_CONFIG) --bindir) \
	  cargo test --release -- --test-threads=1

## bench: benchmarks against their anchors, ratios from the same run.
# A second throwaway cluster with fsync on, for the figures where commit flushes matter.
DURABLE_PORT ?= 5497
DURABLE_ROOT ?= /tmp/pgauth-durable

bench: setup install-ext test-cluster-start
	TEST_FSYNC=on $(MAKE) --no-print-directory test-cluster-start TEST_PORT=$(DURABLE_PORT) TEST_ROOT=$(DURABLE_ROOT)
	TEST_PORT=$(TEST_PORT) BENCH_DURABLE_PORT=$(DURABLE_PORT) python3 benches/run.py; rc=$$?; \
	  $(MAKE) --no-print-directory test-cluster-stop TEST_PORT=$(DURABLE_PORT) TEST_ROOT=$(DURABLE_ROOT); exit $$rc

fmt:
	cargo fmt --all
	cd tests && cargo fmt

lint:
	cargo fmt --all -- --check
	cargo clippy --features pg$(PG_MAJOR) --all-targets -- -D warnings

clean: test-cluster-stop
	cargo clean
	cd tests && cargo clean
