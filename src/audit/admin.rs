//! Administration: enabling and disabling audit on a table (`auth_audit_enable`,
//! `auth_audit_disable`: the four capture triggers), and retention (`auth_audit_purge`: the
//! chain entries up to a position and their records removed, a checkpoint left). The SQL
//! functions themselves are the thin wrappers in `sql.rs`.

use pgrx::prelude::*;
use pgrx::{pg_sys, PgRelation};

use super::capture::storable_type;
use super::raw::{lock_chain, quote_literal};
use super::state::STATE;
use super::verify::verify;
use serde_json::json;

use crate::error::{AuthError, AuthResult, OrRaise};
use crate::pg::event;
use crate::pg::roles::{as_owner, caller_has_privileges_of, require_or, Who};

const TRIGGERS: [(&str, &str, &str); 4] = [
    (
        "pgauth_audit_insert",
        "INSERT",
        "REFERENCING NEW TABLE AS pgauth_new",
    ),
    (
        "pgauth_audit_update",
        "UPDATE",
        "REFERENCING OLD TABLE AS pgauth_old NEW TABLE AS pgauth_new",
    ),
    (
        "pgauth_audit_delete",
        "DELETE",
        "REFERENCING OLD TABLE AS pgauth_old",
    ),
    ("pgauth_audit_truncate", "TRUNCATE", ""),
];

struct TableInfo {
    name: String,
    relkind: u8,
    in_pgauth: bool,
    owner: pg_sys::Oid,
    has_pk: bool,
    audited: bool,
    columns: Vec<String>,
}

fn table_info(tbl: pg_sys::Oid) -> AuthResult<TableInfo> {
    Spi::connect(|client| {
        let row = client
            .select(
                "SELECT pg_catalog.format('%I.%I', n.nspname, c.relname), c.relkind::text, n.nspname = 'pgauth', c.relowner,
                        EXISTS (SELECT 1 FROM pg_catalog.pg_index i
                                 WHERE i.indrelid = c.oid AND i.indisprimary),
                        EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t
                                 WHERE t.tgrelid = c.oid AND t.tgname LIKE 'pgauth_audit_%'),
                        ARRAY(SELECT attname::text FROM pg_catalog.pg_attribute
                               WHERE attrelid = c.oid AND attnum > 0 AND NOT attisdropped)
                   FROM pg_catalog.pg_class c
                   JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                  WHERE c.oid = $1",
                None,
                &[tbl.into()],
            )?
            .first();
        Ok::<_, pgrx::spi::Error>(TableInfo {
            name: row.get::<String>(1)?.unwrap_or_default(),
            relkind: row
                .get::<String>(2)?
                .unwrap_or_default()
                .bytes()
                .next()
                .unwrap_or(0),
            in_pgauth: row.get::<bool>(3)?.unwrap_or(false),
            owner: row.get::<pg_sys::Oid>(4)?.unwrap_or(pg_sys::Oid::INVALID),
            has_pk: row.get::<bool>(5)?.unwrap_or(false),
            audited: row.get::<bool>(6)?.unwrap_or(false),
            columns: row.get::<Vec<String>>(7)?.unwrap_or_default(),
        })
    })
    .map_err(|e| AuthError::Internal(format!("audit: reading the table failed: {e}")))
}

fn check_table_admin(info: &TableInfo, action: &str) -> AuthResult<()> {
    require_or(Who::Admin, action, AuthError::AuditPermissionDenied)?;
    let owns = caller_has_privileges_of(info.owner);
    if !owns {
        return Err(AuthError::AuditPermissionDenied(format!(
            "{action} on {} requires owning the table",
            info.name
        )));
    }
    if info.in_pgauth {
        return Err(AuthError::AuditWrongObject(format!(
            "{} belongs to pgauth and cannot be audited with triggers",
            info.name
        )));
    }
    Ok(())
}

/// Audit INSERT, UPDATE, DELETE and TRUNCATE on `tbl` into pgauth.audit_log. The columns in
/// `exclude_columns` are never stored (password hashes, ciphertexts).
pub(super) fn enable(tbl: PgRelation, exclude_columns: Vec<Option<String>>) {
    let relid = tbl.oid();
    let info = table_info(relid).or_raise();
    drop(tbl);
    check_table_admin(&info, "auth_audit_enable").or_raise();
    if !matches!(info.relkind, b'r' | b'p') {
        AuthError::AuditWrongObject(format!(
            "{} is not a table: only tables and partitioned tables can be audited",
            info.name
        ))
        .raise();
    }
    if info.audited {
        AuthError::AuditAlreadyEnabled(info.name.clone()).raise();
    }
    if !info.has_pk {
        AuthError::AuditNoPrimaryKey(info.name.clone()).raise();
    }
    let mut excluded = Vec::new();
    for c in exclude_columns {
        let Some(c) = c else {
            AuthError::InvalidRequest("exclude_columns must not contain NULL".into()).raise()
        };
        if !info.columns.contains(&c) {
            AuthError::InvalidRequest(format!("column \"{c}\" of {} does not exist", info.name))
                .raise();
        }
        if !excluded.contains(&c) {
            excluded.push(c);
        }
    }
    let types: Vec<(String, pg_sys::Oid, i16)> = Spi::connect(|client| {
        let rows = client.select(
            "SELECT attname::text, atttypid, attnum FROM pg_catalog.pg_attribute
              WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            None,
            &[relid.into()],
        )?;
        let mut out = Vec::new();
        for row in rows {
            if let (Some(n), Some(t), Some(a)) = (
                row.get::<String>(1)?,
                row.get::<pg_sys::Oid>(2)?,
                row.get::<i16>(3)?,
            ) {
                out.push((n, t, a));
            }
        }
        Ok::<_, pgrx::spi::Error>(out)
    })
    .map_err(|e| AuthError::Internal(format!("audit: reading the columns failed: {e}")))
    .or_raise();
    for (column, ty, _) in &types {
        if !excluded.contains(column) && !storable_type(*ty) {
            AuthError::AuditUnsupportedType(format!(
                "column \"{column}\" of {} has a user-defined composite or range type, which audit records cannot store safely",
                info.name
            ))
            .raise();
        }
    }
    // Excluded columns go to the triggers by attribute number, so renaming a column does not
    // stop excluding it.
    let args: Vec<String> = types
        .iter()
        .filter(|(column, _, _)| excluded.contains(column))
        .map(|(_, _, attnum)| quote_literal(&attnum.to_string()))
        .collect();
    as_owner(|| {
        for (name, op, referencing) in TRIGGERS {
            crate::pg::spi::run(&format!(
                "CREATE TRIGGER {name} AFTER {op} ON {} {referencing}
                 FOR EACH STATEMENT EXECUTE FUNCTION pgauth.audit_capture({})",
                info.name,
                args.join(", ")
            ))?;
        }
        Ok::<_, pgrx::spi::Error>(())
    })
    .map_err(|e| AuthError::Internal(format!("audit: creating the triggers failed: {e}")))
    .or_raise();
    as_owner(|| {
        event::record(
            "audit_enabled",
            &info.name,
            json!({"exclude_columns": excluded}),
        )
    })
    .or_raise();
}

/// Stop auditing `tbl`. Its audit rows stay.
pub(super) fn disable(tbl: PgRelation) {
    let info = table_info(tbl.oid()).or_raise();
    drop(tbl);
    check_table_admin(&info, "auth_audit_disable").or_raise();
    if !info.audited {
        AuthError::AuditNotEnabled(info.name.clone()).raise();
    }
    as_owner(|| {
        for (name, _, _) in TRIGGERS {
            crate::pg::spi::run(&format!("DROP TRIGGER IF EXISTS {name} ON {}", info.name))?;
        }
        Ok::<_, pgrx::spi::Error>(())
    })
    .map_err(|e| AuthError::Internal(format!("audit: dropping the triggers failed: {e}")))
    .or_raise();
    as_owner(|| event::record("audit_disabled", &info.name, json!({}))).or_raise();
}

// ---------------------------------------------------------------------------------------------
// Retention

/// Remove the chain entries up to `through_position` and all their audit records, after checking
/// them, leaving a checkpoint (position and chain digest) from which the rest stays verifiable.
/// Superuser only. Export the rows first (README, "Retention").
pub(super) fn purge(through_position: i64) -> i64 {
    require_or(
        Who::Superuser,
        "auth_audit_purge",
        AuthError::AuditPermissionDenied,
    )
    .or_raise();
    // No sealer appends while the chain is checked and cut (released at the end of the
    // transaction).
    lock_chain(true);
    let v = as_owner(|| verify(None, None)).or_raise();
    if !v.ok {
        AuthError::InvalidRequest(format!(
            "the audit log does not verify (first bad id {:?}: {}); nothing was purged",
            v.first_bad_id,
            v.reason.unwrap_or_default()
        ))
        .raise();
    }
    /// Clears the purging flag however the purge ends: also when its error is caught by a
    /// savepoint (a subtransaction abort does not reach the transaction callback).
    struct Purging;
    impl Drop for Purging {
        fn drop(&mut self) {
            STATE.with(|s| s.borrow_mut().purging = false);
        }
    }
    let purged = as_owner(|| {
        STATE.with(|s| s.borrow_mut().purging = true);
        let _purging = Purging;
        crate::pg::spi::connect_mut(|client| {
            let found = client
                .update(
                    "INSERT INTO pgauth.audit_checkpoints (position, chain_digest, horizon,
                                                           purged_events)
                     SELECT c.position, c.chain_digest, c.horizon,
                            (SELECT coalesce(sum(r.event_count), 0)::bigint
                               FROM pgauth.audit_records r
                               JOIN pgauth.audit_chain_txns t ON t.txid = r.txid
                              WHERE t.position <= $1)
                       FROM pgauth.audit_chain c WHERE c.position = $1
                     RETURNING purged_events",
                    None,
                    &[through_position.into()],
                )?
                .first()
                .get::<i64>(1)?;
            let Some(rows) = found else {
                return Ok(None);
            };
            client.update(
                "DELETE FROM pgauth.audit_records l USING pgauth.audit_chain_txns t
                  WHERE t.position <= $1 AND l.txid = t.txid",
                None,
                &[through_position.into()],
            )?;
            client.update(
                "DELETE FROM pgauth.audit_chain WHERE position <= $1",
                None,
                &[through_position.into()],
            )?;
            Ok::<_, pgrx::spi::Error>(Some(rows))
        })
    })
    .map_err(|e| AuthError::Internal(format!("audit: purge failed: {e}")))
    .or_raise();
    let Some(purged) = purged else {
        AuthError::InvalidRequest(format!(
            "audit chain position {through_position} does not exist"
        ))
        .raise()
    };
    as_owner(|| {
        event::record(
            "audit_purged",
            "pgauth.audit_log",
            json!({"through_position": through_position, "events": purged}),
        )
    })
    .or_raise();
    purged
}
