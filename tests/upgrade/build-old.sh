#!/usr/bin/env bash
# Build a released pgauth from its git commit into a package tree for the upgrade test:
# tests/upgrade/build-old.sh VERSION COMMIT PG_CONFIG OUT. Kept between runs (OUT/.done).
set -euo pipefail
VERSION=$1 COMMIT=$2 PG_CONFIG=$3 OUT=$4
if [ -f "$OUT/.done" ]; then exit 0; fi
rm -rf "$OUT"
mkdir -p "$OUT/src"
git archive "$COMMIT" | tar -x -C "$OUT/src"
grep -q "^version = \"$VERSION\"" "$OUT/src/Cargo.toml" || { echo "$COMMIT is not version $VERSION" >&2; exit 1; }
# Its own target folder: the build's output must not replace the current build's library.
(cd "$OUT/src" && CARGO_TARGET_DIR="$OUT/target" cargo pgrx package --pg-config "$PG_CONFIG" --out-dir "$OUT/package")
rm -rf "$OUT/target"
touch "$OUT/.done"
