#!/usr/bin/env python3
"""pg_upgrade with pgauth installed in both majors (`make pg-upgrade-test`).

A PostgreSQL 15 cluster with pgauth preloaded gets a database with every kind of pgauth state
(tests/upgrade/state.py, as the upgrade test fills it), then `pg_upgrade` (link mode off) moves
it into a new cluster of another major (18 by default) where the same pgauth version is
installed. On the new cluster everything made before still works: values decrypt, passwords,
the API key, the access and refresh tokens, TOTP, a recovery code and the passkey, permissions,
and the audit log reads as before and its chain verifies and goes on.

Environment: OLD_BIN, NEW_BIN (the two majors' bin folders), UPGRADE_PORT, UPGRADE_ROOT.
"""
import os
import shutil
import subprocess
import sys
import tempfile

from state import check, connect_to, fill, one, step

OLD_BIN = os.environ["OLD_BIN"]
NEW_BIN = os.environ["NEW_BIN"]
PORT = os.environ.get("UPGRADE_PORT", "6509")
ROOT = os.environ.get("UPGRADE_ROOT", "/tmp/pgauth-pg-upgrade")


def as_postgres(*args, cwd=None):
    subprocess.run(["sudo", "-u", "postgres", "--", *args], check=True, cwd=cwd)


def initdb(bin_dir, data):
    as_postgres(f"{bin_dir}/initdb", "-D", data, "--auth=trust", "--username=postgres",
                "-E", "UTF8", "--locale=C.UTF-8", "--data-checksums")
    conf = (
        f"port = {PORT}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{ROOT}'\n"
        f"shared_preload_libraries = 'pgauth'\npgauth.master_key_file = '{ROOT}/master.key'\n"
        "fsync = off\n"
    )
    subprocess.run(["sudo", "-u", "postgres", "tee", "-a", f"{data}/postgresql.conf"],
                   input=conf, text=True, check=True, stdout=subprocess.DEVNULL)


def start(bin_dir, data):
    as_postgres(f"{bin_dir}/pg_ctl", "-D", data, "-w", "-t", "60", "-l", f"{data}.log", "start")


def stop(bin_dir, data):
    if os.path.exists(f"{data}/postmaster.pid"):
        as_postgres(f"{bin_dir}/pg_ctl", "-D", data, "-w", "-m", "fast", "stop")


def main():
    old, new = f"{ROOT}/old", f"{ROOT}/new"
    for b, d in ((OLD_BIN, old), (NEW_BIN, new)):
        try:
            stop(b, d)
        except subprocess.CalledProcessError:
            pass
    shutil.rmtree(ROOT, ignore_errors=True)
    os.makedirs(ROOT)
    shutil.chown(ROOT, "postgres")
    key = subprocess.run(["openssl", "rand", "-hex", "32"], capture_output=True, text=True,
                         check=True).stdout
    with open(f"{ROOT}/master.key", "w") as f:
        f.write(key)
    os.chmod(f"{ROOT}/master.key", 0o600)
    shutil.chown(f"{ROOT}/master.key", "postgres")
    state = os.path.join(tempfile.mkdtemp(prefix="pgauth-pg-upgrade-"), "passkey.json")
    try:
        step(f"fill a database on {one_line(OLD_BIN)}")
        initdb(OLD_BIN, old)
        start(OLD_BIN, old)
        with connect_to(PORT, "postgres") as db:
            db.execute("CREATE DATABASE pgauth_pg_upgrade")
        with connect_to(PORT, "pgauth_pg_upgrade") as db:
            db.execute("CREATE EXTENSION pgauth")
            version = one(db, "SELECT extversion FROM pg_extension WHERE extname = 'pgauth'")
            s = fill(db, state)
        stop(OLD_BIN, old)

        step(f"pg_upgrade to {one_line(NEW_BIN)}")
        initdb(NEW_BIN, new)
        as_postgres(f"{NEW_BIN}/pg_upgrade", "-b", OLD_BIN, "-B", NEW_BIN, "-d", old, "-D", new,
                    "-p", PORT, "-P", PORT, cwd=ROOT)
        start(NEW_BIN, new)
        with connect_to(PORT, "pgauth_pg_upgrade") as db:
            after = one(db, "SELECT extversion FROM pg_extension WHERE extname = 'pgauth'")
            assert after == version, (version, after)
            check(db, s, state)
        print(f"pg_upgrade test passed: pgauth {version} from {one_line(OLD_BIN)} to "
              f"{one_line(NEW_BIN)}", flush=True)
    finally:
        stop(NEW_BIN, new)
        stop(OLD_BIN, old)


def one_line(bin_dir):
    out = subprocess.run([f"{bin_dir}/postgres", "--version"], capture_output=True, text=True)
    return out.stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
