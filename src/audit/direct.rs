//! Direct writes to pgauth's own state tables: the event one changed row becomes.
//!
//! pgauth's code writes its tables as the owner of schema `pgauth` (Rust through `as_owner`,
//! SQL functions as SECURITY DEFINER) and records its own security events. A write by anyone
//! else (`pgauth_admin`'s `UPDATE pgauth.sessions SET aal = 3`, another superuser's `DELETE`)
//! is caught by a row trigger (`pgauth.audit_direct_change`, in `events.rs`) and recorded here as
//! a table change: the row's key, and for UPDATE the changed columns, old and new. Secret columns
//! (hashes, key material) are never copied: they show as `"(redacted)"`, so the log still says
//! that a password hash was replaced, never what it was or became.
//!
//! Plain Rust on JSON objects (the trigger turns rows into JSON with `row_to_json`).

use serde_json::{Map, Value};

/// What a secret column shows instead of its value.
pub const REDACTED: &str = "(redacted)";

/// One changed row as an event: `(row_key, old_values, new_values)`, with `Value::Null` for
/// an absent part (INSERT has no old row, DELETE no new one).
pub fn direct_change_event(
    key_columns: &[String],
    secret_columns: &[String],
    old: Option<&Map<String, Value>>,
    new: Option<&Map<String, Value>>,
) -> (Value, Value, Value) {
    let shown = |column: &str, value: &Value| {
        if secret_columns.iter().any(|s| s == column) {
            Value::String(REDACTED.into())
        } else {
            value.clone()
        }
    };
    let whole = |row: &Map<String, Value>| {
        Value::Object(row.iter().map(|(c, v)| (c.clone(), shown(c, v))).collect())
    };
    // The key after the change (before it, for DELETE), as for audited tables.
    let key = match new.or(old) {
        Some(row) if !key_columns.is_empty() => Value::Object(
            key_columns
                .iter()
                .map(|c| (c.clone(), shown(c, row.get(c).unwrap_or(&Value::Null))))
                .collect(),
        ),
        _ => Value::Null,
    };
    match (old, new) {
        (Some(old), Some(new)) => {
            let (mut before, mut after) = (Map::new(), Map::new());
            for (column, value) in new {
                let previous = old.get(column).unwrap_or(&Value::Null);
                if previous != value {
                    before.insert(column.clone(), shown(column, previous));
                    after.insert(column.clone(), shown(column, value));
                }
            }
            (key, Value::Object(before), Value::Object(after))
        }
        (None, Some(new)) => (key, Value::Null, whole(new)),
        (Some(old), None) => (key, whole(old), Value::Null),
        (None, None) => (key, Value::Null, Value::Null),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn update_shows_changed_columns_and_redacts_secrets() {
        let old =
            row(json!({"user_id": "u1", "password_hash": "$argon2id$old", "changed_at": "t1"}));
        let new =
            row(json!({"user_id": "u1", "password_hash": "$argon2id$new", "changed_at": "t1"}));
        let (key, before, after) = direct_change_event(
            &names(&["user_id"]),
            &names(&["password_hash"]),
            Some(&old),
            Some(&new),
        );
        assert_eq!(key, json!({"user_id": "u1"}));
        assert_eq!(before, json!({"password_hash": REDACTED}));
        assert_eq!(after, json!({"password_hash": REDACTED}));
        assert!(!format!("{before}{after}").contains("argon2id"));
    }

    #[test]
    fn unchanged_secret_is_not_shown_and_update_of_nothing_is_empty() {
        let r = row(json!({"id": 1, "token_hash": "\\xab", "aal": 1}));
        let (_, before, after) =
            direct_change_event(&names(&["id"]), &names(&["token_hash"]), Some(&r), Some(&r));
        assert_eq!((before, after), (json!({}), json!({})));
        let mut raised = r.clone();
        raised.insert("aal".into(), json!(3));
        let (key, before, after) = direct_change_event(
            &names(&["id"]),
            &names(&["token_hash"]),
            Some(&r),
            Some(&raised),
        );
        assert_eq!(key, json!({"id": 1}));
        assert_eq!((before, after), (json!({"aal": 1}), json!({"aal": 3})));
    }

    #[test]
    fn insert_and_delete_show_the_row_and_a_secret_key_is_redacted() {
        let r = row(json!({"token_hash": "\\xab", "session_id": "s1"}));
        let (key, before, after) = direct_change_event(
            &names(&["token_hash"]),
            &names(&["token_hash"]),
            None,
            Some(&r),
        );
        assert_eq!(key, json!({"token_hash": REDACTED}));
        assert_eq!(before, Value::Null);
        assert_eq!(after, json!({"token_hash": REDACTED, "session_id": "s1"}));
        let (_, before, after) =
            direct_change_event(&names(&[]), &names(&["token_hash"]), Some(&r), None);
        assert_eq!(before, json!({"token_hash": REDACTED, "session_id": "s1"}));
        assert_eq!(after, Value::Null);
    }
}
