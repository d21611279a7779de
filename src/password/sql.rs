//! SQL functions for passwords: argument conversion, settings, SPI and error mapping only.

use pgrx::prelude::*;
use zeroize::Zeroizing;

use super::policy::{problems, Context, Policy};
use crate::error::{AuthError, AuthResult, OrRaise};
use crate::guc::argon2_settings;

/// Argon2id PHC string of `password` with the `pgauth.argon2_*` settings and a fresh salt.
#[pg_extern(volatile, strict, parallel_safe)]
fn auth_hash_password(password: &str) -> String {
    super::hash_password(password.as_bytes(), &argon2_settings()).or_raise()
}

/// Does `password` match `hash`? Any supported scheme; malformed or hostile hashes raise 22023.
#[pg_extern(immutable, strict, parallel_safe)]
fn auth_verify(password: &str, hash: &str) -> bool {
    super::verify(password.as_bytes(), hash).or_raise()
}

/// True unless `hash` is Argon2id with at least the current `pgauth.argon2_*` settings.
#[pg_extern(stable, strict, parallel_safe)]
fn auth_needs_rehash(hash: &str) -> bool {
    super::needs_rehash(hash, &argon2_settings()).or_raise()
}

/// Read one policy row. Runs inside the SECURITY DEFINER functions below, so callers need no
/// privilege on pgauth's tables.
pub(crate) fn load_policy(name: &str) -> AuthResult<(Policy, String)> {
    Spi::connect(|client| {
        let rows = client.select(
            "SELECT min_length, require_upper, require_lower, require_digit, require_special,
                    min_strength, history, max_age_days, pg_catalog.current_database()::text
               FROM pgauth.password_policies WHERE name = $1",
            Some(1),
            &[name.into()],
        )?;
        if rows.is_empty() {
            return Ok(Err(AuthError::UnknownPolicy(name.to_string())));
        }
        let row = rows.first();
        let int = |i: usize| -> Result<u32, pgrx::spi::Error> {
            Ok(row.get::<i32>(i)?.unwrap_or(0).max(0) as u32)
        };
        let flag = |i: usize| -> Result<bool, pgrx::spi::Error> {
            Ok(row.get::<bool>(i)?.unwrap_or(false))
        };
        let policy = Policy {
            name: name.to_string(),
            min_length: int(1)?,
            require_upper: flag(2)?,
            require_lower: flag(3)?,
            require_digit: flag(4)?,
            require_special: flag(5)?,
            min_strength: int(6)?.min(4) as u8,
            history: int(7)?,
            max_age_days: int(8)?,
        };
        let database = row.get::<String>(9)?.unwrap_or_default();
        Ok(Ok((policy, database)))
    })
    .unwrap_or_else(|e: pgrx::spi::Error| {
        Err(AuthError::Internal(format!(
            "reading the policy failed: {e}"
        )))
    })
}

fn policy_problems(password: &str, username: Option<&str>, policy: &str) -> (String, Vec<String>) {
    let password = Zeroizing::new(password.to_string());
    let (policy, database) = load_policy(policy).or_raise();
    let context = Context {
        username,
        database: Some(database.as_str()),
    };
    let found = problems(&password, &context, &policy);
    (policy.name, found)
}

/// Every problem of `password` under `policy` (empty array = acceptable). NULL password → NULL.
#[pg_extern(stable, parallel_safe, security_definer)]
#[search_path(pg_catalog, pgauth, pg_temp)]
fn auth_password_problems(
    password: Option<&str>,
    username: default!(Option<&str>, "NULL"),
    policy: default!(Option<&str>, "'default'"),
) -> Option<Vec<String>> {
    let password = password?;
    Some(policy_problems(password, username, policy.unwrap_or("default")).1)
}

/// Raise 22023 listing every problem of `password` under `policy`; return nothing when acceptable.
#[pg_extern(stable, parallel_safe, security_definer)]
#[search_path(pg_catalog, pgauth, pg_temp)]
fn auth_check_password(
    password: Option<&str>,
    username: default!(Option<&str>, "NULL"),
    policy: default!(Option<&str>, "'default'"),
) {
    let Some(password) = password else { return };
    let (policy, found) = policy_problems(password, username, policy.unwrap_or("default"));
    if !found.is_empty() {
        AuthError::PolicyViolation {
            policy,
            problems: found,
        }
        .raise();
    }
}
