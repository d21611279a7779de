#!/usr/bin/env bash
# Seeds of the audit fuzz targets, captured by a real server: a table with one column of each
# kind the reader checks (the columns of fuzz/src/lib.rs, audit_columns(), in that order) is
# audited, written to (inserts, updates, deletes, NULLs, wide and empty values), and the stored
# records' `rows` and `shape` become seeds/audit_frames, seeds/audit_shape and seeds/audit_values.
# Usage: fuzz/make_audit_seeds.sh "<libpq connection string of a database with pgauth>"
set -euo pipefail
cd "$(dirname "$0")"
DSN=$1
psql() { command psql -X -q -v ON_ERROR_STOP=1 "$DSN" "$@"; }
psql <<'SQL'
DROP TABLE IF EXISTS fuzz_seed;
DROP TYPE IF EXISTS fuzz_mood;
CREATE TYPE fuzz_mood AS ENUM ('calm', 'busy');
CREATE TABLE fuzz_seed (
    id int PRIMARY KEY, t text, i8 bigint, b bool, i2 smallint, n numeric, j jsonb, u uuid,
    nm name, ip inet, ia int[], ta text[], ts timestamptz, by bytea, mood fuzz_mood);
SELECT auth_audit_enable('fuzz_seed');
INSERT INTO fuzz_seed VALUES
  (1, 'one', 1, true, 1, 1.5, '{"a": [1, 2.5, "x", null, true, {"b": {}}]}',
   'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'alice', '192.168.0.1/24', '{1,2,3}',
   '{"x", NULL, "zz"}', now(), '\x00ff', 'calm'),
  (2, repeat('w', 300), -9223372036854775808, false, -32768, 'NaN', '[[], {}, "", 0, -1e-20]',
   NULL, '', '::1', '{{1,2},{3,4}}', '{}', 'infinity', '', 'busy'),
  (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
  (4, '', 0, true, 0, -123456789012345678901234567890.000000000001, '"text"',
   '00000000-0000-0000-0000-000000000000', repeat('n', 63), '2001:db8::/32', '{NULL,7}',
   ARRAY[repeat('l', 200)], '-infinity', decode(repeat('ab', 200), 'hex'), 'calm');
UPDATE fuzz_seed SET t = t || '!', n = n * 2, j = j || '{"k": 1}' WHERE id IN (1, 4);
DELETE FROM fuzz_seed WHERE id = 3;
UPDATE fuzz_seed SET id = id + 10;
SQL
rm -rf seeds/audit_frames seeds/audit_shape
mkdir -p seeds/audit_frames seeds/audit_shape
psql -At -c "SELECT id, encode(rows, 'hex'), shape FROM pgauth.audit_records
             WHERE table_name LIKE '%fuzz_seed' AND rows IS NOT NULL ORDER BY id" |
while IFS='|' read -r id rows shape; do
    xxd -r -p <<<"$rows" > "seeds/audit_frames/record-$id"
    printf '%s' "$shape" > "seeds/audit_shape/record-$id"
done
# One value per file for audit_values, its kind in the first byte (see audit_kinds()).
cargo run -q --release --example make_seeds -- audit-values
ls seeds/audit_frames seeds/audit_shape | wc -l
