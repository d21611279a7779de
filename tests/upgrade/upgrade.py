#!/usr/bin/env python3
"""Upgrade in place, the way a DBA does it (`make upgrade-test`, part of `make test`).

1. The 0.1.0 build (tests/upgrade/build-old.sh) is installed into the server's directories and a
   throwaway cluster fills a database with every kind of pgauth state: users, groups, roles and
   scoped grants, data keys with usage grants and encrypted columns, signing keys, sessions and
   refresh tokens, an API key, TOTP and recovery codes, a passkey, and an audited table with a
   sealed chain.
2. The cluster stops, the current build is installed, the cluster starts, and
   `ALTER EXTENSION pgauth UPDATE` runs.
3. Everything made by 0.1.0 still works: values decrypt, passwords and the API key verify, the
   old access token binds and the old refresh token rotates, TOTP and a recovery code verify,
   the passkey signs in, permissions answer as before, the audit log reads as before and its
   chain verifies and goes on.
4. The updated catalog equals a fresh install's (tests/upgrade/catalog.sql: every member object,
   its definition, owner and privileges).

Environment: OLD_PACKAGE (the 0.1.0 package directory), NEW_PACKAGE (the current one),
PG_BIN, UPGRADE_PORT, UPGRADE_ROOT.
"""
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

import psycopg

from state import check, connect_to, fill, one, step

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
PG_BIN = os.environ["PG_BIN"]
PORT = os.environ.get("UPGRADE_PORT", "6505")
ROOT = os.environ.get("UPGRADE_ROOT", "/tmp/pgauth-upgrade")
OLD = os.environ["OLD_PACKAGE"]
NEW = os.environ["NEW_PACKAGE"]


def install(package):
    """Copy a `cargo pgrx package` tree over the server's own directories."""
    usr = os.path.join(package, "usr")
    subprocess.run(["cp", "-a", f"{usr}/.", "/usr/"], check=True)


def cluster(action):
    env = dict(os.environ, TEST_PORT=PORT, TEST_ROOT=ROOT, PG_BIN=PG_BIN)
    subprocess.run(["bash", os.path.join(REPO, "tests", "cluster.sh"), action], check=True, env=env)


def connect(dbname="pgauth_upgrade"):
    return connect_to(PORT, dbname)


def check_symbols():
    """Every C symbol a released install script names is still in the library."""
    libs = glob.glob(os.path.join(NEW, "usr", "lib", "**", "pgauth.so"), recursive=True)
    assert len(libs) == 1, libs
    out = subprocess.run(["nm", "-D", "--defined-only", libs[0]], capture_output=True,
                         text=True, check=True).stdout
    exported = {line.split()[-1] for line in out.splitlines() if line.strip()}
    scripts = glob.glob(os.path.join(REPO, "sql", "released", "pgauth--*.sql"))
    assert scripts, "no released install script"
    for script in scripts:
        named = set(re.findall(r"'MODULE_PATHNAME',\s*'([A-Za-z0-9_]+)'", open(script).read()))
        assert named, script
        missing = sorted(sym for sym in named
                         if sym not in exported or f"pg_finfo_{sym}" not in exported)
        assert not missing, f"{os.path.basename(script)} names symbols the library lacks: {missing}"


def catalog(dbname):
    sql = os.path.join(HERE, "catalog.sql")
    out = subprocess.run(
        [os.path.join(PG_BIN, "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
         "-h", "127.0.0.1", "-p", PORT, "-U", "postgres", "-d", dbname, "-f", sql],
        capture_output=True, text=True, check=True,
    )
    return out.stdout.splitlines()


def main():
    state = os.path.join(tempfile.mkdtemp(prefix="pgauth-upgrade-"), "passkey.json")
    cluster("stop")
    shutil.rmtree(ROOT, ignore_errors=True)
    try:
        step("install 0.1.0 and fill a database")
        install(OLD)
        cluster("start")
        with connect("postgres") as db:
            db.execute("CREATE DATABASE pgauth_upgrade")
            db.execute("CREATE DATABASE pgauth_fresh")
        with connect() as db:
            db.execute("CREATE EXTENSION pgauth")
            assert one(db, "SELECT extversion FROM pg_extension WHERE extname = 'pgauth'") == "0.1.0"
            s = fill(db, state)
        cluster("stop")

        step("install the current build, restart, ALTER EXTENSION pgauth UPDATE")
        check_symbols()
        install(NEW)
        cluster("start")
        with connect() as db:
            # Before the update, the old SQL meets the new library: a removed function says so.
            try:
                db.execute("SELECT count(*) FROM pgauth.audit_log")
                raise AssertionError("0.1.0's audit_decode must refuse under the new library")
            except psycopg.errors.FeatureNotSupported as e:
                assert "ALTER EXTENSION pgauth UPDATE" in (e.diag.message_hint or ""), e
            db.execute("ALTER EXTENSION pgauth UPDATE")
            version = one(db, "SELECT extversion FROM pg_extension WHERE extname = 'pgauth'")
            assert version == one(db, "SELECT default_version FROM pg_available_extensions"
                                      " WHERE name = 'pgauth'"), version
            step(f"updated to {version}; checking what 0.1.0 made")
            check(db, s, state)
        with connect("pgauth_fresh") as db:
            db.execute("CREATE EXTENSION pgauth")

        step("the updated catalog equals a fresh install's")
        updated, fresh = catalog("pgauth_upgrade"), catalog("pgauth_fresh")
        missing = sorted(set(fresh) - set(updated))
        extra = sorted(set(updated) - set(fresh))
        for line in missing:
            print(f"  only in a fresh install: {line}")
        for line in extra:
            print(f"  only after the update:  {line}")
        assert not missing and not extra, "the updated catalog differs from a fresh install"
        print(f"upgrade test passed: {len(fresh)} catalog lines equal", flush=True)
    finally:
        cluster("stop")
        install(NEW)


if __name__ == "__main__":
    sys.exit(main())
