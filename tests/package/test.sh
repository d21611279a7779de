#!/usr/bin/env bash
# The Debian package on its own: tests/package/test.sh DEB PG_MAJOR PORT.
# Removes the files a development install put into the system PostgreSQL, installs the package
# with dpkg, and, from an empty folder with nothing of the build tree, starts a new cluster with
# pgauth preloaded, runs CREATE EXTENSION pgauth and the quick start the package ships.
set -euo pipefail
DEB=$1 MAJOR=$2 PORT=$3
ROOT=/tmp/pgauth-package
BIN=/usr/lib/postgresql/$MAJOR/bin
LIB=$("$BIN/pg_config" --pkglibdir)
EXT=$("$BIN/pg_config" --sharedir)/extension
NAME=postgresql-$MAJOR-pgauth
as_postgres() { sudo -u postgres -- "$@"; }

stop() { [ -f "$ROOT/data/PG_VERSION" ] && as_postgres "$BIN/pg_ctl" -D "$ROOT/data" -w -m fast stop >/dev/null 2>&1 || true; }
stop
rm -rf "$ROOT"
# Nothing of a development install may stay behind: every file must come from the package.
rm -f "$LIB/pgauth.so" "$EXT"/pgauth.control "$EXT"/pgauth--*.sql
dpkg -i "$DEB" >/dev/null
for f in "$LIB/pgauth.so" "$EXT/pgauth.control" "$EXT/pgauth--0.1.0.sql" "$EXT/pgauth--0.1.0--0.2.0.sql"; do
    dpkg -S "$f" | grep -q "^$NAME:" || { echo "$f is not from $NAME" >&2; exit 1; }
done
VERSION=$(dpkg-query -W -f='${Version}' "$NAME")
[ -f "$EXT/pgauth--$VERSION.sql" ] || { echo "the package lacks pgauth--$VERSION.sql" >&2; exit 1; }

mkdir -p "$ROOT" && chown postgres: "$ROOT"
cd "$ROOT"
as_postgres "$BIN/initdb" -D "$ROOT/data" --auth=trust --username=postgres -E UTF8 --locale=C.UTF-8 >/dev/null
openssl rand -hex 32 | as_postgres tee "$ROOT/master.key" >/dev/null
as_postgres chmod 600 "$ROOT/master.key"
cat <<CONF | as_postgres tee -a "$ROOT/data/postgresql.conf" >/dev/null
port = $PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$ROOT'
shared_preload_libraries = 'pgauth'
pgauth.master_key_file = '$ROOT/master.key'
CONF
trap stop EXIT
as_postgres "$BIN/pg_ctl" -D "$ROOT/data" -w -l "$ROOT/server.log" start >/dev/null
PSQL=("$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres)
"${PSQL[@]}" -d postgres -c "CREATE DATABASE pgauth_package"
"${PSQL[@]}" -d pgauth_package -c "CREATE EXTENSION pgauth"
installed=$("${PSQL[@]}" -At -d pgauth_package -c "SELECT extversion FROM pg_extension WHERE extname = 'pgauth'")
[ "$installed" = "$VERSION" ] || { echo "installed $installed, packaged $VERSION" >&2; exit 1; }
"${PSQL[@]}" -d pgauth_package -f "/usr/share/doc/$NAME/quickstart.sql" > "$ROOT/quickstart.out"
grep -q "alice_bound" "$ROOT/quickstart.out" || { cat "$ROOT/quickstart.out"; exit 1; }
ok=$("${PSQL[@]}" -At -d pgauth_package -c "SELECT ok FROM auth_audit_verify()")
[ "$ok" = t ] || { echo "the quick start's audit chain does not verify" >&2; exit 1; }
echo "package test passed: $(basename "$DEB") installs, creates pgauth $VERSION and runs the quick start"
