#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for pg_regress, the integration tests and the benchmarks.
# Trust authentication on loopback and a private socket directory only; pgauth preloaded so the
# role-password check can be tested. Usage: tests/cluster.sh start|stop|status
set -euo pipefail
PG_MAJOR=${PG_MAJOR:-15}
TEST_PORT=${TEST_PORT:-5499}
TEST_ROOT=${TEST_ROOT:-/tmp/pgauth-test}
BIN=${PG_BIN:-/usr/lib/postgresql/$PG_MAJOR/bin}
DATA=$TEST_ROOT/data
SOCK=$TEST_ROOT/socket
LOG=$TEST_ROOT/server.log

as_postgres() {
    if [ "$(id -un)" = postgres ]; then "$@"; else sudo -u postgres -- "$@"; fi
}

case "${1:-start}" in
start)
    if as_postgres "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
        as_postgres "$BIN/pg_ctl" -D "$DATA" -w -m fast stop >/dev/null
    fi
    mkdir -p "$TEST_ROOT"
    chown postgres: "$TEST_ROOT" 2>/dev/null || true
    # A data directory left by another major (same TEST_ROOT, other PG_BIN) cannot be started by
    # this one; it is a throwaway, so make a new one.
    major=$("$BIN/postgres" --version | sed -E 's/.* ([0-9]+)[.].*/\1/')
    if [ -f "$DATA/PG_VERSION" ] && [ "$(cat "$DATA/PG_VERSION")" != "$major" ]; then
        rm -rf "$DATA"
    fi
    if [ ! -f "$DATA/PG_VERSION" ]; then
        as_postgres "$BIN/initdb" -D "$DATA" --auth=trust --username=postgres -E UTF8 --locale=C.UTF-8 >/dev/null
        as_postgres mkdir -p "$SOCK"
        cat <<CONF | as_postgres tee -a "$DATA/postgresql.conf" >/dev/null
port = $TEST_PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$SOCK'
shared_preload_libraries = '${TEST_PRELOAD-pgauth}'
max_connections = 100
fsync = ${TEST_FSYNC:-off}
log_min_messages = warning
CONF
    fi
    # A master key for the encryption tests: 32 random bytes, readable only by the server.
    if [ ! -f "$TEST_ROOT/master.key" ]; then
        openssl rand -hex 32 | as_postgres tee "$TEST_ROOT/master.key" >/dev/null
        as_postgres chmod 600 "$TEST_ROOT/master.key"
    fi
    if ! as_postgres grep -q "pgauth.master_key_file" "$DATA/postgresql.conf"; then
        echo "pgauth.master_key_file = '$TEST_ROOT/master.key'" | as_postgres tee -a "$DATA/postgresql.conf" >/dev/null
    fi
    # The port of this start wins over the one written at initdb (a data directory kept from a
    # run with another TEST_PORT).
    as_postgres "$BIN/pg_ctl" -D "$DATA" -w -t 60 -o "-p $TEST_PORT" start -l "$LOG" >/dev/null || { cat "$LOG"; exit 1; }
    ;;
stop)
    if [ -f "$DATA/PG_VERSION" ]; then
        as_postgres "$BIN/pg_ctl" -D "$DATA" -w -m fast stop >/dev/null 2>&1 || true
    fi
    ;;
status)
    as_postgres "$BIN/pg_ctl" -D "$DATA" status
    ;;
*)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
