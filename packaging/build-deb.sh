#!/usr/bin/env bash
# Build the Debian package of pgauth for one PostgreSQL major from a `cargo pgrx package` tree:
# packaging/build-deb.sh PG_CONFIG OUT_DIR. Writes OUT_DIR/postgresql-<major>-pgauth_<version>_<arch>.deb
# (installs into that major's system directories; depends on postgresql-<major>).
set -euo pipefail
PG_CONFIG=$1 OUT=$2
MAJOR=$("$PG_CONFIG" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
VERSION=$(sed -nE 's/^version = "([^"]+)"/\1/p' Cargo.toml | head -1)
ARCH=$(dpkg --print-architecture)
NAME=postgresql-$MAJOR-pgauth
TREE=$OUT/$NAME
rm -rf "$TREE"
mkdir -p "$TREE"
cargo pgrx package --pg-config "$PG_CONFIG" --out-dir "$TREE"
# The released install scripts (a dump of an older version restores with its own script).
install -m 644 sql/released/*.sql "$TREE$("$PG_CONFIG" --sharedir)/extension/"
install -d "$TREE/usr/share/doc/$NAME"
install -m 644 README.md "$TREE/usr/share/doc/$NAME/README.md"
install -m 644 examples/quickstart.sql "$TREE/usr/share/doc/$NAME/quickstart.sql"
find "$TREE" -type d -exec chmod 755 {} +
strip --strip-unneeded "$TREE"/usr/lib/postgresql/*/lib/pgauth.so
install -d "$TREE/DEBIAN"
SIZE=$(du -sk --exclude=DEBIAN "$TREE" | cut -f1)
cat > "$TREE/DEBIAN/control" <<CONTROL
Package: $NAME
Version: $VERSION
Architecture: $ARCH
Maintainer: pgauth developers <pgauth@localhost>
Depends: postgresql-$MAJOR, libc6
Section: database
Priority: optional
Installed-Size: $SIZE
Description: authentication and authorization inside PostgreSQL $MAJOR
 pgauth: Argon2id passwords, password policies, envelope encryption, RBAC with row-level
 security, sessions and JWTs, TOTP and passkeys, and a tamper-evident audit log.
 Add pgauth to shared_preload_libraries, set pgauth.master_key_file, restart, then
 CREATE EXTENSION pgauth.
CONTROL
dpkg-deb --root-owner-group --build "$TREE" "$OUT/${NAME}_${VERSION}_${ARCH}.deb" >/dev/null
rm -rf "$TREE"
echo "$OUT/${NAME}_${VERSION}_${ARCH}.deb"
