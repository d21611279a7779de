//! Permission checks: the per-backend cache of effective permissions and the SQL functions.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;

use pgrx::prelude::*;
use pgrx::{pg_sys, Uuid};

use super::model::{Applicable, Grant, Network, Scope, UserPermissions};
use crate::error::{AuthError, AuthResult, OrRaise};
use crate::pg::binding;
use crate::pg::current_position;
use crate::pg::roles::{as_owner, require, Who};
use crate::pg::spi::{read_one, spi_err};

#[derive(Default)]
struct RbacState {
    users: HashMap<[u8; 16], Rc<UserPermissions>>,
    checked_at: Option<(u32, u32, i64)>,
    generation: Option<i64>,
}

thread_local! {
    static STATE: RefCell<RbacState> = RefCell::new(RbacState::default());
}

/// Everything that can reach a user: direct and group assignments, closed over role
/// inheritance, joined to the roles' permissions.
const EFFECTIVE_PERMISSIONS: &str = "
WITH RECURSIVE assigned AS (
    SELECT g.role_id, g.scope, g.allowed_ips, g.expires_at
      FROM pgauth.role_grants g WHERE g.user_id = $1
    UNION ALL
    SELECT g.role_id, g.scope, g.allowed_ips, g.expires_at
      FROM pgauth.role_grants g JOIN pgauth.group_members m ON m.group_id = g.group_id
     WHERE m.user_id = $1
), closure(role_id, scope, allowed_ips, expires_at) AS (
    SELECT role_id, scope, allowed_ips, expires_at FROM assigned
    UNION
    SELECT i.inherits_id, c.scope, c.allowed_ips, c.expires_at
      FROM closure c JOIN pgauth.role_inherits i ON i.role_id = c.role_id
)
SELECT rp.permission, c.scope, c.allowed_ips::text[],
       -- 'infinity': never expires; '-infinity': expired; no bigint overflow near either end
       CASE WHEN c.expires_at = 'infinity' THEN NULL
            WHEN c.expires_at = '-infinity' THEN -9223372036854775807
            ELSE least(extract(epoch FROM c.expires_at) * 1000000, 9223372036854775807)::bigint
       END, rp.min_aal
  FROM closure c JOIN pgauth.role_permissions rp ON rp.role_id = c.role_id";

fn unix_micros_now() -> i64 {
    // Transaction start, like now(): stable for the statement and the transaction.
    const POSTGRES_EPOCH_IN_UNIX_MICROS: i64 = 946_684_800_000_000;
    unsafe { pg_sys::GetCurrentTransactionStartTimestamp() + POSTGRES_EPOCH_IN_UNIX_MICROS }
}

/// At each statement (and after each modifying command): drop cached permissions when any RBAC
/// table changed since.
fn refresh() -> AuthResult<()> {
    let position = current_position();
    if STATE.with(|s| s.borrow().checked_at) == Some(position) {
        return Ok(());
    }
    let generation = as_owner(|| read_one::<i64>("SELECT generation FROM pgauth.rbac_state", &[]))
        .map_err(spi_err)?
        .unwrap_or(0);
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        if s.generation != Some(generation) {
            s.users.clear();
            s.generation = Some(generation);
        }
        s.checked_at = Some(position);
    });
    Ok(())
}

fn load(user: [u8; 16]) -> AuthResult<UserPermissions> {
    let uuid = Uuid::from_bytes(user);
    as_owner(|| {
        Spi::connect(|client| {
            let status = client.select(
                "SELECT status FROM pgauth.users WHERE id = $1",
                Some(1),
                &[uuid.into()],
            )?;
            let active =
                !status.is_empty() && status.first().get::<String>(1)?.as_deref() == Some("active");
            let mut perms = UserPermissions::new(active);
            if !active {
                return Ok(perms);
            }
            for row in client.select(EFFECTIVE_PERMISSIONS, None, &[uuid.into()])? {
                let permission = row.get::<String>(1)?.unwrap_or_default();
                let networks = row.get::<Vec<String>>(3)?.map(|list| {
                    list.iter()
                        .filter_map(|n| Network::parse(n))
                        .collect::<Vec<_>>()
                });
                let grant = Grant {
                    networks,
                    expires_at_us: row.get::<i64>(4)?,
                    min_aal: row.get::<i32>(5)?.unwrap_or(1),
                    ..Grant::with_scope(row.get::<String>(2)?)
                };
                perms.add(permission, grant);
            }
            Ok(perms)
        })
    })
    .map_err(spi_err)
}

fn permissions_of(user: [u8; 16]) -> AuthResult<Rc<UserPermissions>> {
    refresh()?;
    if let Some(p) = STATE.with(|s| s.borrow().users.get(&user).cloned()) {
        return Ok(p);
    }
    let perms = Rc::new(load(user)?);
    STATE.with(|s| s.borrow_mut().users.insert(user, perms.clone()));
    Ok(perms)
}

fn check(
    user: [u8; 16],
    permission: &str,
    scope: Scope<'_>,
    client: Option<&IpAddr>,
    aal: i32,
) -> bool {
    permissions_of(user)
        .or_raise()
        .allows(permission, scope, client, unix_micros_now(), aal)
}

/// The last answer set, valid for one statement, one binding and one permission name: what
/// makes a per-row call a comparison plus a binary search.
struct Memo {
    position: (u32, u32, i64),
    /// The binding the answer was computed for (`binding::version` moves with its content).
    binding_version: u64,
    permission: String,
    applicable: Applicable,
}

thread_local! {
    static MEMO: RefCell<Option<Memo>> = const { RefCell::new(None) };
}

fn check_bound(permission: Option<&str>, scope: Scope<'_>) -> bool {
    let Some(permission) = permission else {
        return false;
    };
    let position = current_position();
    let binding_version = binding::version();
    let hit = MEMO.with(|m| {
        m.borrow().as_ref().and_then(|m| {
            (m.position == position
                && m.binding_version == binding_version
                && m.permission == permission)
                .then(|| m.applicable.allows(scope))
        })
    });
    if let Some(answer) = hit {
        return answer;
    }
    let applicable = match &binding::current() {
        None => Applicable::default(),
        Some(b) => permissions_of(b.user_id).or_raise().applicable(
            permission,
            b.client.as_ref(),
            unix_micros_now(),
            i32::from(b.aal),
        ),
    };
    let answer = applicable.allows(scope);
    MEMO.with(|m| {
        *m.borrow_mut() = Some(Memo {
            position,
            binding_version,
            permission: permission.to_string(),
            applicable,
        })
    });
    answer
}

fn key(id: &Uuid) -> [u8; 16] {
    let mut k = [0u8; 16];
    k.copy_from_slice(id.as_bytes());
    k
}

/// Does the bound session user have `permission` in `scope` (from this connection's client
/// address)? False when no user is bound. Fast enough to call per row in an RLS policy.
#[pg_extern(stable, parallel_safe)]
fn auth_has_permission(permission: Option<&str>, scope: default!(Option<&str>, "NULL")) -> bool {
    check_bound(permission, scope.map_or(Scope::Global, Scope::Text))
}

#[pg_extern(stable, parallel_safe, name = "auth_has_permission")]
fn auth_has_permission_bigint(permission: Option<&str>, scope: Option<i64>) -> bool {
    check_bound(permission, scope.map_or(Scope::Global, Scope::Int))
}

#[pg_extern(stable, parallel_safe, name = "auth_has_permission")]
fn auth_has_permission_uuid(permission: Option<&str>, scope: Option<Uuid>) -> bool {
    check_bound(
        permission,
        scope.map_or(Scope::Global, |u| Scope::Uuid(key(&u))),
    )
}

/// Raise 42501 unless the bound session user has `permission` in `scope`. When the session's
/// assurance level is what is missing, the hint says to step up.
#[pg_extern(stable, parallel_safe)]
fn auth_require_permission(permission: Option<&str>, scope: default!(Option<&str>, "NULL")) {
    // NULL names no permission: never granted (as auth_has_permission answers false).
    let Some(permission) = permission else {
        AuthError::PermissionDenied("a NULL permission is never granted".into()).raise();
    };
    let scope = scope.map_or(Scope::Global, Scope::Text);
    if !check_bound(Some(permission), scope) {
        let Some(binding) = binding::current() else {
            AuthError::PermissionDenied(format!(
                "permission \"{permission}\" is required and no pgauth user is bound to this transaction"
            ))
            .raise();
        };
        let higher = binding.aal < 3
            && permissions_of(binding.user_id).or_raise().allows(
                permission,
                scope,
                binding.client.as_ref(),
                unix_micros_now(),
                3,
            );
        if higher {
            AuthError::StepUpRequired(format!(
                "permission \"{permission}\" requires a higher authentication assurance level than this session's (aal {})",
                binding.aal
            ))
            .raise();
        }
        AuthError::PermissionDenied(format!("permission \"{permission}\" is required")).raise();
    }
}

/// Does `user_id` have `permission` in `scope`, from `client_ip`, signed in at assurance level
/// `aal`? For application servers (pgauth_service) and administrators.
#[pg_extern(stable, parallel_safe)]
fn auth_user_has_permission(
    user_id: Option<Uuid>,
    permission: Option<&str>,
    scope: default!(Option<&str>, "NULL"),
    client_ip: default!(Option<pgrx::datum::Inet>, "NULL"),
    aal: default!(Option<i32>, 1),
) -> bool {
    // NULL: the default, a password sign-in
    let aal = aal.unwrap_or(1);
    let (Some(user_id), Some(permission)) = (user_id, permission) else {
        return false;
    };
    let client = client_ip.and_then(|ip| {
        // inet text may carry a prefix length ("10.0.0.1/32").
        ip.0.split('/')
            .next()
            .and_then(|a| a.parse::<IpAddr>().ok())
    });
    check(
        key(&user_id),
        permission,
        scope.map_or(Scope::Global, Scope::Text),
        client.as_ref(),
        aal,
    )
}

/// The permissions `user_id` has now (`permission` or `permission@scope`).
#[pg_extern(stable, strict, parallel_safe)]
fn auth_user_permissions(user_id: Uuid) -> SetOfIterator<'static, String> {
    require(Who::AdminOrService, "auth_user_permissions").or_raise();
    let perms = permissions_of(key(&user_id)).or_raise();
    SetOfIterator::new(perms.listing(unix_micros_now()))
}
